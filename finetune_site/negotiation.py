"""Content negotiation for the API (its own module: DRF imports it while importing its views)."""

from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation


class FallbackNegotiation(DefaultContentNegotiation):
    """An Accept header the view cannot satisfy gets the view's first format (JSON under /v1), not a 406:
    the openai client and curl never ask for anything else, and a browser's text/html gets readable JSON."""

    def select_renderer(self, request, renderers, format_suffix=None):
        try:
            return super().select_renderer(request, renderers, format_suffix)
        except NotAcceptable:
            if request.query_params.get(self.settings.URL_FORMAT_OVERRIDE) or format_suffix:
                raise  # an explicit ?format= that does not exist stays an error
            return renderers[0], renderers[0].media_type
