"""A static file server for the benchmarks: http.server with a listen backlog that many
concurrent streams need (the stock one queues 5 connections and drops the rest's SYNs, which
then retry after 1, 3, 7 ... seconds and look like a slow network).

    python bench/_origin.py DIR      prints "port N", serves DIR on 127.0.0.1 until killed
"""

from __future__ import annotations

import functools
import resource
import sys
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer


class Server(ThreadingHTTPServer):
    request_queue_size = 4096
    daemon_threads = True


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    handler = functools.partial(QuietHandler, directory=sys.argv[1])
    with Server(("127.0.0.1", 0), handler) as httpd:
        print(f"port {httpd.server_address[1]}", flush=True)
        httpd.serve_forever()


if __name__ == "__main__":
    main()
