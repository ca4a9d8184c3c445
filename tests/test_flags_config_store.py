"""flags.py, config.py and store.py on their own."""
import sqlite3
import time

import pytest

from mcpwitness.config import ConfigError, from_dict, load
from mcpwitness.decode.flags import FlagConfig, Flagger, address_scope, open_risk
from mcpwitness.output.store import Store, connect, list_calls, parse_since, wall_of


@pytest.mark.parametrize("path,label", [
    ("/etc/shadow", "system accounts"), ("/etc/passwd", "system accounts"),
    ("/root/.ssh/id_ed25519", "ssh keys and config"), ("/home/ann/.ssh/config", "ssh keys and config"),
    ("/home/ann/.aws/credentials", "cloud credentials"), ("/srv/app/.env", "environment files"),
    ("/srv/app/.env.production", "environment files"), ("/proc/1/environ", "process secrets"),
    ("/home/ann/.git-credentials", "tokens and passwords"), ("/tmp/notes.txt", None), ("/srv/app/env", None),
    ("/home/ann/.sshx/a", None), ("/etc/passwd.d/x", None),
])
def test_sensitive_paths(path, label):
    assert Flagger().sensitive(path) == label


def test_executables_and_risk_and_scope():
    f = Flagger()
    assert [f.exe_category(x) for x in ("/bin/bash", "/usr/bin/curl", "/usr/bin/python3.12", "/usr/bin/git")] == \
        ["shell", "downloader", "interpreter", None]
    assert [open_risk(x) for x in (0, 0o2000000, 1, 0o2001, 0o101, 0o1001, 0o1000)] == \
        ["read", "read", "write", "write", "create", "truncate", "read"]
    assert [address_scope("AF_INET", a) for a in ("127.0.0.9", "10.1.2.3", "169.254.1.1", "8.8.8.8")] == \
        ["loopback", "private", "link-local", "public"]
    assert address_scope("AF_INET6", "::ffff:127.0.0.1") == "loopback" and address_scope("AF_UNIX", None) == "unix"


def test_configured_lists_extend_or_replace_the_defaults():
    f = Flagger(FlagConfig.from_dict({"sensitive_paths": {"payroll": ["/srv/payroll/**"]},
                                      "executables": {"downloader": ["fetchit"]}}))
    assert f.sensitive("/srv/payroll/2026/jan.csv") == "payroll" and f.sensitive("/etc/shadow")
    assert f.exe_category("/opt/bin/fetchit") == "downloader"
    g = Flagger(FlagConfig.from_dict({"replace_defaults": True, "sensitive_paths": {"x": ["/x"]}}))
    assert g.sensitive("/etc/shadow") is None and g.sensitive("/x") == "x" and g.exe_category("bash") is None


def test_bad_config_is_refused_with_the_place(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("audit:\n  linger: [1\n")
    with pytest.raises(ConfigError, match=r"c.yaml:\d+:\d+: not valid YAML"):
        load(str(p))
    for doc, msg in (({"audit": {"lingr": 3}}, "unknown key .lingr."), ({"nope": 1}, "unknown section .nope."),
                     ({"audit": {"linger": "soon"}}, "not a duration"), ({"store": {"max_size": "big"}}, "not a size"),
                     ({"flags": {"sensitive_paths": {"a": [1]}}}, "non-empty strings"), ([1], "mapping")):
        with pytest.raises(ConfigError, match=msg):
            from_dict(doc, "f.yaml")
    c = from_dict({"audit": {"linger": "2m", "call_timeout": 30}, "store": {"retention": "1d", "max_size": "64M"}})
    assert (c.linger, c.call_timeout, c.retention, c.max_size) == (120, 30, 86400, 64 << 20)
    with pytest.raises(ConfigError, match="No such file"):
        load(str(tmp_path / "missing.yaml"))


def test_times():
    assert wall_of("2026-11-22T10:00:00.500000000Z") == pytest.approx(1795341600.5)
    assert parse_since("10m", now=1000.0) == 400.0
    assert parse_since("2026-11-22") == 1795305600.0
    with pytest.raises(ValueError):
        parse_since("yesterday")


def test_store_retention_and_bad_records(tmp_path):
    db = tmp_path / "s.db"
    old = time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime(time.time() - 3 * 86400))
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime())
    s = Store(str(db), max_age=10 * 86400, interval=0.05)
    s.write([{"type": "start", "time": old}, {"type": "start", "time": now}, object()])
    s.close()
    assert s.stats["errors"] == 1  # the object() is counted, the rest stored
    con = sqlite3.connect(db)
    assert con.execute("SELECT COUNT(*) FROM other").fetchone()[0] == 2
    Store(str(db), max_age=86400).close()  # retention by age, applied by the writer at start
    assert [r[0] for r in con.execute("SELECT record FROM other")] == [f'{{"type":"start","time":"{now}"}}'.encode()]
    Store(str(db), max_age=0).close()  # everything is old
    assert con.execute("SELECT COUNT(*) FROM other").fetchone()[0] == 0
    assert list_calls(connect(str(db), readonly=True)) == []
    with pytest.raises(FileNotFoundError):
        connect(str(tmp_path / "none.db"), readonly=True)
