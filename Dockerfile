# One image for web, worker and beat; docker-compose.yml picks the Makefile target.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DATA_DIR=/data \
    HF_HOME=/data/hf

# make runs the entry points (`make web|worker|beat`); nothing else comes from apt.
RUN apt-get update \
    && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*

# Non-root, and it owns /app (collectstatic output, celerybeat-schedule) and /data.
# A named volume mounted on /data copies this ownership on first use.
RUN useradd --create-home --uid 1000 app \
    && mkdir -p /app /data/hf \
    && chown -R app:app /app /data
USER app
WORKDIR /app

# The venv lives at /app/.venv so the Makefile's default VENV works unchanged.
RUN python -m venv /app/.venv \
    && /app/.venv/bin/pip install --upgrade pip
ENV PATH=/app/.venv/bin:$PATH

# torch first and pinned, as in the Makefile; its own layer because it is the big one.
RUN pip install torch==2.13.0

# Dependencies come from pyproject.toml alone, so editing source keeps this layer cached.
COPY --chown=app:app pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['test']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY --chown=app:app . .
# Dependencies are already in; this only links the project itself. The stamp file
# tells the Makefile that `install` is done, so `make test` here does not reinstall.
RUN pip install --no-deps -e . \
    && touch /app/.venv/.installed

EXPOSE 8000
CMD ["make", "web"]
