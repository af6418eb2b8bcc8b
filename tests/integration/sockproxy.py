"""A byte relay for tests: listens on a unix socket or a loopback TCP port and forwards
every connection to a target (unix path or (host, port)). stop() closes the listener and
cuts every relayed connection, so the client sees its server go away; start() listens again
on the same address. Threads only, no subprocess."""

import os
import socket
import threading


class Proxy:
    def __init__(self, target, listen_path=None):
        """target: a unix socket path (str) or (host, port). listen_path: a unix socket to
        listen on; None: a loopback TCP port the kernel picks (self.port, kept across
        restarts)."""
        self.target = target
        self.listen_path = listen_path
        self.port = 0
        self._lsock = None
        self._conns = []
        self._lock = threading.Lock()

    def _connect_target(self):
        if isinstance(self.target, str):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.connect(self.target)
        return s

    def start(self):
        if self.listen_path:
            if os.path.exists(self.listen_path):
                os.unlink(self.listen_path)
            ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            ls.bind(self.listen_path)
        else:
            ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            ls.bind(("127.0.0.1", self.port))
            self.port = ls.getsockname()[1]
        ls.listen(64)
        self._lsock = ls
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()
        return self

    def _accept(self, ls):
        while True:
            try:
                c, _ = ls.accept()
            except OSError:
                return
            try:
                t = self._connect_target()
            except OSError:
                c.close()
                continue
            with self._lock:
                if self._lsock is not ls:  # stopped meanwhile
                    c.close()
                    t.close()
                    return
                self._conns += [c, t]
            for a, b in ((c, t), (t, c)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a, b):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                b.sendall(d)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self):
        with self._lock:
            ls, self._lsock = self._lsock, None
            conns, self._conns = self._conns, []
        if ls:
            try:
                ls.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            ls.close()
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        if self.listen_path and os.path.exists(self.listen_path):
            os.unlink(self.listen_path)
