"""A stand-in for the system browser in tests: follows IAM Connect's redirect to the login listener.

Used as ``BROWSER="python fake_browser.py %s"``: the simulator's login page logs the ``login_hint``
professional in at once and redirects to the harness's one-shot listener on 127.0.0.1.
"""

import sys

import httpx

answer = httpx.get(sys.argv[1], follow_redirects=False, timeout=10)
httpx.get(answer.headers["location"], timeout=10)
