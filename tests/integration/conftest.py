import pytest


@pytest.fixture(scope="session")
def served_run(tiny_run_dir, tmp_path_factory):
    """`vlmtune serve RUN` on the tiny run, shared by the browser and load tests (uploads limited to 1 MB)."""
    from webserver import Server

    server = Server(tiny_run_dir, tmp_path_factory.mktemp("serve"), "--max-upload-mb", "1")
    yield server
    server.stop()
