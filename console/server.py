"""The web console the hub serves: a page per department (charts from its queries) and, for customer service
only, the customer 360 page with the split action.

Everything is drawn on the server (console/charts.py), styles come from the package: no build step, no CDN,
no script. Roles: a page of a role listed in console.tokens needs its token (a login form sets it as a
cookie; clients may send it as a bearer); the service role always needs one, since its pages show personal
data. Rows come from run_query, the analysts' read-only sessions (sinks/read_only.py).
"""
from __future__ import annotations

import hmac
import logging
import threading
from datetime import datetime, timezone
from html import escape
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qs, quote, unquote, urlsplit

from console.customers import customer_page, find, search_page, search_terms
from console.departments import DEPARTMENTS, PERSONAL, RunQuery, collect, department_parameters, render_html
from console.layout import page

log = logging.getLogger(__name__)

COOKIE = "omnihub_console"
# (customer id, identifiers as kind:value, reason) -> what was done, in a sentence
Split = Callable[[str, list[str], str], str]


def navigation(roles: set[str]) -> str:
    links = ['<a class="brand" href="/">Omnihub</a>'] + [
        f'<a href="/department/{name}">{escape(name if name != "kpis" else "KPIs")}</a>' for name in DEPARTMENTS]
    links.append('<a href="/customer">Customer 360</a>')
    links.append(f'<span>{"role: " + ", ".join(sorted(roles)) if roles else ""} <a href="/login">log in</a></span>')
    return "".join(links)


class ConsoleServer:
    def __init__(self, settings, run_query: RunQuery, split: Split | None = None, host: str | None = None,
                 port: int | None = None):
        console = settings.console
        tokens = dict(console.tokens)
        default_region, fallback = settings.identity.default_region, tuple(settings.identity.phone_fallback_regions)
        capacity = console.capacity_events_per_minute

        def roles_of(token: str) -> set[str]:
            return {role for role, expected in tokens.items() if token and hmac.compare_digest(token.encode(), expected.encode())}

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt, *args):
                log.debug(fmt, *args)

            def _send(self, status: int, body: str, content_type: str = "text/html; charset=utf-8",
                      headers: dict | None = None) -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")  # pages may hold personal data
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def _roles(self) -> set[str]:
                authorization = self.headers.get("Authorization", "")
                if authorization.startswith("Bearer "):
                    return roles_of(authorization[len("Bearer "):])
                cookie = SimpleCookie(self.headers.get("Cookie", ""))
                return roles_of(unquote(cookie[COOKIE].value)) if COOKIE in cookie else set()

            def _refuse(self, role: str, roles: set[str]) -> None:
                body = (f'<p class="error" id="refused">This page needs the {escape(role)} role'
                        + (" (it shows personal data)" if role in PERSONAL else "")
                        + f'. Log in with that role\'s token.</p>{login_form(self.path)}')
                self._send(403, page("Not allowed", body, navigation(roles)))

            def _allowed(self, role: str, roles: set[str]) -> bool:
                needs_token = role in PERSONAL or role in tokens
                return not needs_token or role in roles

            def _body(self) -> dict[str, list[str]]:
                length = int(self.headers.get("Content-Length", 0) or 0)
                return parse_qs(self.rfile.read(length).decode(), keep_blank_values=True)

            def do_GET(self):
                url = urlsplit(self.path)
                asked = {key: values[-1] for key, values in parse_qs(url.query).items()}
                roles = self._roles()
                try:
                    if url.path == "/":
                        return self._send(200, page("Omnihub console", index(), navigation(roles)))
                    if url.path == "/login":
                        return self._send(200, page("Log in", login_form(asked.get("next", "/")), navigation(roles)))
                    if url.path.startswith("/department/"):
                        department = url.path[len("/department/"):]
                        if department not in DEPARTMENTS:
                            return self._send(404, page("No such page", f"<p>No department {escape(department)}.</p>",
                                                        navigation(roles)))
                        if not self._allowed(department, roles):
                            return self._refuse(department, roles)
                        parameters = department_parameters(run_query, capacity, asked)
                        sections = collect(department, run_query, parameters)
                        return self._send(200, render_html(department, sections, parameters, navigation(roles)))
                    if url.path == "/customer" or url.path.startswith("/customer/"):
                        if not self._allowed("service", roles):
                            return self._refuse("service", roles)
                        if url.path == "/customer":
                            typed = asked.get("q", "")
                            columns, rows = find(run_query, search_terms(typed, default_region, fallback)) if typed.strip() else ([], [])
                            if len(rows) == 1:
                                return self._send(303, "", headers={"Location": f"/customer/{quote(rows[0][0])}"})
                            return self._send(200, page("Customer 360", search_page(typed, columns, rows), navigation(roles)))
                        customer_id = unquote(url.path[len("/customer/"):])
                        body = customer_page(run_query, customer_id, split is not None, asked.get("notice", ""))
                        if body is None:
                            return self._send(404, page("Customer 360", f'<p class="notice" id="no-match">No current '
                                                        f'customer {escape(customer_id)} (merged into another, '
                                                        'forgotten, or never seen).</p>', navigation(roles)))
                        return self._send(200, page("Customer 360", body, navigation(roles)))
                    self._send(404, page("No such page", f"<p>Nothing at {escape(url.path)}.</p>", navigation(roles)))
                except Exception as error:  # a failing query shows on the page, in one line, and in the log
                    log.error("console %s: %s: %s", url.path, type(error).__name__, error)
                    self._send(500, page("Error", f'<p class="error">{escape(type(error).__name__)}: {escape(str(error))}</p>',
                                         navigation(roles)))

            def do_POST(self):
                url = urlsplit(self.path)
                form = self._body()
                if url.path == "/login":
                    token = (form.get("token") or [""])[0]
                    target = (form.get("next") or ["/"])[0]
                    if not roles_of(token):
                        return self._send(403, page("Log in", '<p class="error" id="refused">No role has that token.</p>'
                                                    + login_form(target)))
                    target = target if target.startswith("/") and not target.startswith("//") else "/"
                    return self._send(303, "", headers={"Location": target, "Set-Cookie":
                                      f"{COOKIE}={quote(token)}; Path=/; HttpOnly; SameSite=Strict"})
                roles = self._roles()
                if url.path.startswith("/customer/") and url.path.endswith("/split"):
                    if not self._allowed("service", roles) or split is None:
                        return self._refuse("service", roles)
                    customer_id = unquote(url.path[len("/customer/"):-len("/split")])
                    identifiers, reason = form.get("identifier", []), (form.get("reason") or [""])[0].strip()
                    if not identifiers or not reason:
                        notice = "Choose the identifiers to move and say why."
                    else:
                        try:
                            notice = split(customer_id, identifiers, reason)
                        except Exception as error:
                            notice = f"The split was not sent: {error}"
                    return self._send(303, "", headers={"Location": f"/customer/{quote(customer_id)}?notice={quote(notice)}"})
                self._send(404, page("No such page", f"<p>Nothing to post at {escape(url.path)}.</p>", navigation(roles)))

        self.httpd = ThreadingHTTPServer((host or console.host, console.port if port is None else port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="omnihub-console", daemon=True)

    @property
    def address(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "ConsoleServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def login_form(target: str = "/") -> str:
    return ('<form method="post" action="/login" id="login"><input type="password" name="token" placeholder="role token" '
            f'size="40"><input type="hidden" name="next" value="{escape(target)}"> <button type="submit">Log in</button></form>')


def index() -> str:
    items = "".join(f'<li><a href="/department/{name}">{escape(title)}</a></li>' for name, title in DEPARTMENTS.items())
    return (f"<p>One view of each customer across every channel, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.</p>"
            f'<ul>{items}<li><a href="/customer">Customer 360</a> (customer service)</li></ul>')
