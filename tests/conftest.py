import atexit
import os
import shutil
import signal
import tempfile

# Keep numeric libraries from oversubscribing the 2 cores CI has.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "2")
# Caches a run writes (the mixing bank's) go to a folder of this test session, not the user's.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="ipmix-test-cache-")
atexit.register(shutil.rmtree, os.environ["XDG_CACHE_HOME"], True)
# A suite started in the background by a non-interactive shell inherits SIGINT as ignored (or,
# under some supervisors, blocked), and so would every command it starts: the Ctrl-C tests need
# Ctrl-C to do what it does at a terminal. Done here, before any thread exists, so all inherit it.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
if hasattr(signal, "pthread_sigmask"):
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 API (moto in server mode) on 127.0.0.1 for this test session."""
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3(s3_endpoint, monkeypatch):
    """The endpoint reached as a user reaches MinIO: AWS_ENDPOINT_URL and a key pair in the
    environment (subprocesses inherit them). Yields an s3fs filesystem to arrange objects with."""
    import s3fs

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    s3fs.S3FileSystem.clear_instance_cache()
    yield s3fs.S3FileSystem()
    s3fs.S3FileSystem.clear_instance_cache()


def pytest_configure(config):
    # `make test-fast` (-m "not kernels") must stay fast on a cold checkout: a test there that
    # reaches a Numba kernel fails and names the marker it lacks, instead of compiling.
    if "not kernels" in (config.option.markexpr or ""):
        from numba.core.dispatcher import Dispatcher

        def refuse(self, *args, **kwargs):
            raise RuntimeError(f"{self.py_func.__module__}.{self.py_func.__name__} is a Numba kernel: "
                               "mark the test @pytest.mark.kernels")

        Dispatcher._compile_for_args = refuse
