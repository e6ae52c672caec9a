"""``python -m finetune_site.server``: the web server, uvicorn, with the options this site relies on.

uvicorn streams request bodies to the application (it stops reading the socket while the body is
not being read), where daphne buffers each whole body in memory first. One module names the options
so that ``make web``, ``manage.py launch`` and the tests start the same server.

Environment: ``WEB_CONCURRENCY`` (processes, default 1) and ``FORWARDED_ALLOW_IPS`` (the proxies
whose X-Forwarded-For/-Proto are believed, default 127.0.0.1) are read by uvicorn itself; ``LOG_FORMAT=json``
sends uvicorn's own log lines through Django's JSON handler.
"""

import argparse
import os

WS_MAX_BYTES = 2**20  # the pages send small JSON messages (a playground prompt at most)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m finetune_site.server", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT") or 8000))
    options = parser.parse_args(argv)

    import uvicorn

    uvicorn.run(
        "finetune_site.asgi:application",
        host=options.host,
        port=options.port,
        ws="websockets-sansio",
        ws_max_size=WS_MAX_BYTES,
        lifespan="off",  # Django's ASGI handler has no startup/shutdown hooks
        proxy_headers=True,
        server_header=False,
        timeout_keep_alive=5,
        # On SIGTERM open requests (a streamed chat reply) get this long to finish.
        timeout_graceful_shutdown=20,
        # Django's middleware writes each request's access line, with its route, duration and request id.
        access_log=False,
        # LOG_FORMAT=json: uvicorn's own lines go through Django's JSON handler too (uvicorn's config is plain).
        **({"log_config": None} if os.environ.get("LOG_FORMAT", "").strip().lower() == "json" else {}),
    )


if __name__ == "__main__":
    main()
