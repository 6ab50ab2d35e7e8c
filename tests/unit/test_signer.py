from urllib.parse import parse_qs, urlsplit

import pytest

from engine.files import Signer

SHA = "a" * 64


def q(url):
    return parse_qs(urlsplit(url).query)


def test_signed_url_binds_method_object_size_and_expiry():
    now = [1000.0]
    s = Signer(b"k" * 32, "http://h:1", ttl_s=60, clock=lambda: now[0])
    url = s.url("PUT", SHA, 10)
    assert s.verify("PUT", SHA, q(url)) == 10
    for method, sha, query in [("GET", SHA, q(url)), ("PUT", "b" * 64, q(url)),
                               ("PUT", SHA, q(url.replace("size=10", "size=11"))),
                               ("PUT", SHA, q(url.replace("exp=1060", "exp=9999"))),
                               ("PUT", SHA, {k: v for k, v in q(url).items() if k != "sig"})]:
        with pytest.raises(PermissionError):
            s.verify(method, sha, query)
    now[0] = 1061
    with pytest.raises(PermissionError, match="expired"):
        s.verify("PUT", SHA, q(url))
    assert "k" * 32 not in url


def test_other_key_rejected():
    a, b = Signer(b"1" * 32, "http://h"), Signer(b"2" * 32, "http://h")
    with pytest.raises(PermissionError):
        b.verify("GET", SHA, q(a.url("GET", SHA, 1)))
