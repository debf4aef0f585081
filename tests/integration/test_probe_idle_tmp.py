import socket, time, re
from test_tls import tls_server, pki, RawPOP3, STLS_OK  # noqa
def test_probe(server, pki):
    s = tls_server(server, pki, login_timeout=5)
    idle = socket.create_connection(("127.0.0.1", s.tls_port), timeout=30)
    c = RawPOP3(s.host, s.port); assert c.cmd("STLS") == STLS_OK
    t0 = time.monotonic()
    for name, sock in (("implicit", idle), ("stls", c.sock)):
        sock.settimeout(30)
        data = b""
        try:
            while True:
                d = sock.recv(4096)
                if not d: break
                data += d
        except Exception as e:
            data += repr(e).encode()
        print(name, round(time.monotonic() - t0, 2), data[:200])
    print(s.log())
