"""attribute.py on made-up event sequences: the evidence rules, one by one,
and the cases where they must refuse to decide."""
from mcpwitness.decode.attribute import Attributor
from mcpwitness.records import ExitEvent, ForkEvent, OpenEvent, ThreadEvent

SERVER = 100


def base(pid, tid, ts, ancestry=()):
    return dict(time="", ktime_ns=ts, pid=pid, tid=tid, ppid=1, uid=0, comm="x", start_ns=0, cgroup_id=0, root=pid,
                ancestry=list(ancestry), truncated=False, notes=[])


def open_(pid, tid, ts, path="/f", ancestry=()):
    return OpenEvent(**base(pid, tid, ts, ancestry), syscall="openat", path=path, resolved=path, flags=["O_RDONLY"],
                     flags_raw=0, access="read", mode=None, dirfd=None, result=3, error=None)


def fork(pid, tid, ts, child, ancestry=()):
    return ForkEvent(**base(pid, tid, ts, ancestry), child_pid=child, child_start_ns=0)


def exit_(pid, ts, ancestry=()):
    return ExitEvent(**base(pid, pid, ts, ancestry), status=0, exit_code=0, signal=None, signal_name=None,
                     core_dumped=False)


def thread(pid, tid, ts, new):
    return ThreadEvent(**base(pid, tid, ts), new_tid=new)


class Call:
    def __init__(self, name):
        self.id = name


def verdicts(pairs):
    return {id(ev): v for ev, v in pairs}


def names(v):
    return sorted(r.call.id for r in v.requests)


def test_event_loop_overlap_is_ambiguous():
    a = Attributor()
    r1 = a.request_read(SERVER, 100, 10, Call("r1"))
    r2 = a.request_read(SERVER, 100, 11, Call("r2"))
    e = open_(SERVER, 100, 12)
    assert a.event(e) == []  # waits for both to be answered
    assert a.response_written(r1, 100, 20) == []
    out = verdicts(a.response_written(r2, 100, 30))
    v = out[id(e)]
    assert v.quality == "ambiguous" and names(v) == ["r1", "r2"] and "2 requests" in v.reason


def test_only_request_in_flight_is_exact_and_idle_is_none():
    a = Attributor()
    r1 = a.request_read(SERVER, 100, 10, Call("r1"))
    e1 = open_(SERVER, 101, 15)
    a.event(e1)
    out = verdicts(a.response_written(r1, 100, 20))
    assert out[id(e1)].quality == "exact" and names(out[id(e1)]) == ["r1"]
    e2 = open_(SERVER, 100, 25)
    (ev, v), = a.event(e2)
    assert ev is e2 and v.quality == "none" and v.requests == []


def test_same_thread_read_and_answer_is_thread_evidence():
    a = Attributor()
    r1 = a.request_read(SERVER, 201, 10, Call("r1"))  # a thread per connection
    r2 = a.request_read(SERVER, 202, 11, Call("r2"))
    e1, e2 = open_(SERVER, 201, 12), open_(SERVER, 202, 13)
    a.event(e1)
    a.event(e2)
    out = verdicts(a.response_written(r1, 201, 20))
    out.update(verdicts(a.response_written(r2, 202, 21)))
    assert out[id(e1)].quality == "thread" and names(out[id(e1)]) == ["r1"]
    assert out[id(e2)].quality == "thread" and names(out[id(e2)]) == ["r2"]


def test_same_thread_rule_refused_when_the_thread_read_another_request_meanwhile():
    # an anyio-style pool thread: it reads r1, then (instead of serving r1)
    # reads r2, and happens to write r1's response later
    a = Attributor()
    r1 = a.request_read(SERVER, 300, 10, Call("r1"))
    r2 = a.request_read(SERVER, 300, 12, Call("r2"))
    e = open_(SERVER, 300, 13)
    a.event(e)
    a.response_written(r1, 300, 20)
    out = verdicts(a.response_written(r2, 301, 21))
    assert out[id(e)].quality == "ambiguous"


def test_dispatched_thread_per_request():
    a = Attributor()
    main = 400
    r1 = a.request_read(SERVER, main, 10, Call("r1"))
    r2 = a.request_read(SERVER, main, 10, Call("r2"))  # both lines in one read
    a.thread_created(thread(SERVER, main, 11, 401))
    a.thread_created(thread(SERVER, main, 12, 402))
    e1, e2 = open_(SERVER, 401, 13), open_(SERVER, 402, 14)
    a.event(e1)
    a.event(e2)
    out = verdicts(a.response_written(r2, 402, 20))
    out.update(verdicts(a.response_written(r1, 401, 21)))
    assert out[id(e1)].quality == "thread" and names(out[id(e1)]) == ["r1"]
    assert out[id(e2)].quality == "thread" and names(out[id(e2)]) == ["r2"]


def test_lazily_created_pool_thread_gets_no_binding():
    # a pool thread created after r2 was read runs r1's work, then writes r2's response
    a = Attributor()
    r1 = a.request_read(SERVER, 500, 10, Call("r1"))
    r2 = a.request_read(SERVER, 500, 11, Call("r2"))
    a.thread_created(thread(SERVER, 500, 12, 501))
    e = open_(SERVER, 501, 13)  # r1's work, in truth
    a.event(e)
    out = verdicts(a.response_written(r1, 500, 19))
    out.update(verdicts(a.response_written(r2, 500, 20)))
    # thread 501 never wrote a response; and r2's response by 500 (which read both) binds nothing
    assert out[id(e)].quality == "ambiguous"


def test_event_stamped_after_the_response_is_not_the_requests():
    a = Attributor()
    r1 = a.request_read(SERVER, 100, 10, Call("r1"))
    e = open_(SERVER, 101, 25)  # reached the ring before the response record, stamped after it
    a.event(e)
    out = verdicts(a.response_written(r1, 100, 20))
    assert out[id(e)].quality == "none"


def test_branch_carries_the_request_after_the_response():
    a = Attributor()
    r1 = a.request_read(SERVER, 100, 10, Call("r1"))
    f = fork(SERVER, 100, 12, 600)
    a.event(f)
    out = verdicts(a.response_written(r1, 100, 20))
    assert out[id(f)].quality == "exact"
    assert a.live_branches(r1) == [600]
    g = fork(600, 600, 30, 601, ancestry=[SERVER])
    late = open_(601, 601, 40, ancestry=[600, SERVER])
    out = verdicts(a.event(g) + a.event(late))
    assert out[id(late)].quality == "exact" and names(out[id(late)]) == ["r1"]
    assert out[id(late)].branch == 600 and "descendant" in out[id(late)].reason
    a.event(exit_(600, 41, ancestry=[SERVER]))
    assert a.live_branches(r1) == [601]
    a.event(exit_(601, 42, ancestry=[600, SERVER]))
    assert a.live_branches(r1) == []
    # a worker forked while idle is outside any request, whenever it acts
    f2 = fork(SERVER, 100, 50, 700)
    (_, v), = a.event(f2)
    r2 = a.request_read(SERVER, 100, 60, Call("r2"))
    (_, v2), = a.event(open_(700, 700, 61, ancestry=[SERVER]))
    assert v.quality == v2.quality == "none"
    assert r2.waiting == 0


def test_descendant_whose_fork_was_not_seen_is_unknown():
    a = Attributor()
    a.request_read(SERVER, 100, 10, Call("r1"))
    (_, v), = a.event(open_(800, 800, 11, ancestry=[SERVER]))
    assert v.quality == "unknown" and "not seen" in v.reason


def test_argument_hint_decides_only_when_one_candidate_names_the_path():
    picks = []

    def hint(ev, cands):
        got = [(r, "names it") for r in cands if r.call.id == ev.path.strip("/")]
        picks.append(len(got))
        return got

    a = Attributor(hint=hint)
    r1 = a.request_read(SERVER, 100, 10, Call("r1"))
    r2 = a.request_read(SERVER, 100, 11, Call("r2"))
    e1, e2 = open_(SERVER, 100, 12, "/r1"), open_(SERVER, 100, 13, "/other")
    a.event(e1)
    a.event(e2)
    a.response_written(r1, 100, 20)
    out = verdicts(a.response_written(r2, 100, 21))
    assert out[id(e1)].quality == "argument" and names(out[id(e1)]) == ["r1"]
    assert [r.call.id for r in out[id(e1)].others] == ["r2"]
    assert out[id(e2)].quality == "ambiguous"


def test_server_exit_settles_what_waits():
    a = Attributor()
    a.request_read(SERVER, 100, 10, Call("r1"))
    a.request_read(SERVER, 100, 11, Call("r2"))
    e = open_(SERVER, 100, 12)
    a.event(e)
    out = verdicts(a.event(exit_(SERVER, 13)))
    assert out[id(e)].quality == "ambiguous"


def test_a_policy_event_about_an_open_goes_with_the_call_naming_the_path():
    from mcpwitness.records import PolicyEvent

    a, b = cand({"path": "/srv/a/secret.txt"}), cand({"path": "/srv/b"})

    def pe(check, path):
        return PolicyEvent("t", 1, 10, 10, 1, 0, "py", 5, 0, 10, [], False, [], check, "killed", "", "m", None, 1,
                           3, ["read"], path, None, None, None, 0)

    assert picked(pe("open", "/srv/a/secret.txt"), [a, b]) == [a]
    assert picked(pe("open", "/srv/b/x"), [a, b]) == [b]
    assert picked(pe("exec", "/srv/b/x"), [a, b]) == []   # /srv/b is a directory, not the program


# --- argument evidence (decode/evidence.py): a trigger and a near miss per kind --------------------

def cand(arguments, server=SERVER, session="s"):
    from types import SimpleNamespace as NS

    from mcpwitness.decode.attribute import Request
    r = Request(NS(req=NS(params={"name": "t", "arguments": arguments}), session=session), server, 1, 1)
    return r


def picked(ev, cands, anchors=("/srv/notes",)):
    from mcpwitness.decode.audit import named_by_arguments
    return [r for r, _ in named_by_arguments(ev, cands, lambda r: list(anchors))]


def test_relative_name_matches_at_a_component_boundary_under_an_anchor():
    a, b = cand({"name": "n7.txt"}), cand({"name": "n17.txt"})
    assert picked(open_(SERVER, 1, 5, "/srv/notes/n7.txt"), [a, b]) == [a]       # not n17.txt: a boundary
    assert picked(open_(SERVER, 1, 5, "/srv/notes/sub/n17.txt"), [a, b]) == [b]
    # near misses: outside the server's cwd and the client's roots; or both name it
    assert picked(open_(SERVER, 1, 5, "/etc/n7.txt"), [a, b]) == []
    assert picked(open_(SERVER, 1, 5, "/srv/notes/n7.txt"), [a, b], anchors=()) == []
    c = cand({"file": "./n7.txt"})
    assert picked(open_(SERVER, 1, 5, "/srv/notes/n7.txt"), [a, c]) == [a, c]     # two: no decision
    assert picked(open_(SERVER, 1, 5, "/srv/notes/n7.txt"), [cand({"p": "../n7.txt"})]) == []


def connect_(address, port, unix_path=None):
    from mcpwitness.records import ConnectEvent
    return ConnectEvent(**base(SERVER, SERVER, 10), fd=3, family="unix" if unix_path else "inet", address=address,
                        port=port, unix_path=unix_path, sock_type="stream", protocol="tcp", result=0, error=None)


def test_an_address_in_the_arguments_names_a_connect():
    url, hp = cand({"url": "http://127.0.0.1:8080/x"}), cand({"target": "127.0.0.3:9000"})
    assert picked(connect_("127.0.0.1", 8080), [url, hp]) == [url]
    assert picked(connect_("127.0.0.3", 9000), [url, hp]) == [hp]
    assert picked(connect_("::ffff:127.0.0.3", 9000), [url, hp]) == [hp]          # IPv4-mapped
    kv = cand({"host": "localhost", "port": 5432})
    assert picked(connect_("127.0.0.1", 5432), [kv, url]) == [kv]
    name = cand({"url": "https://api.example.com/v1"})
    assert picked(connect_("192.0.2.7", 443), [name, url]) == [name]               # a host name: by its port
    # near misses: another port; an address no call names; both name it
    assert picked(connect_("127.0.0.1", 8081), [url, hp]) == []
    assert picked(connect_("127.0.0.2", 8080), [url, hp]) == []
    assert picked(connect_("127.0.0.1", 8080), [url, cand({"u": "http://127.0.0.1:8080/y"})]) != [url]
    sock = cand({"socket": "/run/app.sock"})
    assert picked(connect_(None, None, "/run/app.sock"), [sock, url]) == [sock]


def exec_(filename, argv, result=0):
    from mcpwitness.records import ExecEvent
    return ExecEvent(**base(SERVER, SERVER, 10), filename=filename, exe=filename, argv=argv, argv_bytes=len(argv),
                     result=result, error=None, syscall="execve")


def test_a_command_in_the_arguments_names_an_exec():
    grep, ls = cand({"command": "grep -r TODO ."}), cand({"cmd": ["ls", "-l"]})
    assert picked(exec_("/usr/bin/grep", ["grep", "-r", "TODO", "."]), [grep, ls]) == [grep]
    assert picked(exec_("/usr/bin/ls", ["ls", "-l"]), [grep, ls]) == [ls]
    shell = cand({"script": "ls | wc -l"})
    assert picked(exec_("/bin/sh", ["sh", "-c", "ls | wc -l"]), [shell, grep]) == [shell]   # given whole
    cat = cand({"path": "/srv/notes/a.txt"})
    assert picked(exec_("/usr/bin/cat", ["cat", "/srv/notes/a.txt"]), [cat, grep]) == [cat]
    # near misses: prose that mentions a program is not a command; a failed exec; both name it
    prose = cand({"text": "grep the logs"})
    assert picked(exec_("/usr/bin/grep", ["grep", "x"]), [prose, ls]) == []
    assert picked(exec_("/usr/bin/ls", ["ls"], result=-2), [grep, ls]) == []
    assert picked(exec_("/usr/bin/jq", ["jq", "json"]), [cand({"format": "json"}), grep]) == []   # a short word
    assert picked(exec_("/usr/bin/grep", ["grep", "y"]), [grep, cand({"command": "grep y"})]) != [grep]


def test_a_fork_is_decided_by_its_branchs_first_exec():
    def hint(ev, cands):
        return [(r, "x") for r in cands if ev.argv[0] == r.call.id]

    a = Attributor(hint=hint)
    r1 = a.request_read(SERVER, 100, 10, Call("ls"))
    r2 = a.request_read(SERVER, 100, 11, Call("grep"))
    f = fork(SERVER, 100, 12, 900)
    a.event(f)
    from mcpwitness.records import ExecEvent
    e = ExecEvent(**base(900, 900, 13, [SERVER]), filename="/usr/bin/grep", exe=None, argv=["grep"], argv_bytes=5,
                  result=0, error=None, syscall="execve")
    a.event(e)
    a.response_written(r1, 100, 20)
    out = verdicts(a.response_written(r2, 100, 21))
    assert out[id(f)].quality == out[id(e)].quality == "argument"
    assert names(out[id(f)]) == names(out[id(e)]) == ["grep"] and "its branch ran" in out[id(f)].reason


# --- wake-up evidence (--wakeup-evidence): a hand-off from the thread that read one request alone ---

def wake(pid, tid, ts, wakee):
    from mcpwitness.records import WakeEvent
    return WakeEvent(**base(pid, tid, ts), wakee=wakee, syscall=202)


def test_a_thread_woken_right_after_a_lone_read_acts_for_that_request():
    a = Attributor()
    r1 = a.request_read(SERVER, 100, 10, Call("r1"))
    r2 = a.request_read(SERVER, 100, 20, Call("r2"))      # read 2 alone: thread 100 hands r2 off next
    a.woke(wake(SERVER, 100, 21, 300))
    e = open_(SERVER, 300, 22)
    a.event(e)
    a.woke(wake(SERVER, 300, 23, 100))                     # 300 wakes 100 back: its turn ends
    after = open_(SERVER, 300, 24)
    a.event(after)
    a.response_written(r1, 100, 30)
    out = verdicts(a.response_written(r2, 100, 31))
    assert out[id(e)].quality == "wakeup" and names(out[id(e)]) == ["r2"], out[id(e)].reason
    assert "woken by thread 100" in out[id(e)].reason
    assert out[id(after)].quality == "ambiguous"
    assert a.wakes["handoffs"] == 1


def test_no_hand_off_after_a_read_that_held_two_requests():
    a = Attributor()
    r1 = a.request_read(SERVER, 100, 10, Call("r1"))
    r2 = a.request_read(SERVER, 100, 10, Call("r2"))      # one read, two requests
    a.woke(wake(SERVER, 100, 11, 300))
    e = open_(SERVER, 300, 12)
    a.event(e)
    a.response_written(r1, 100, 30)
    out = verdicts(a.response_written(r2, 100, 31))
    assert out[id(e)].quality == "ambiguous"
    assert a.wakes == {"handoffs": 0, "refused_busy": 0, "after_two_requests": 1}


def test_only_the_first_wake_after_the_read_and_never_a_busy_thread():
    a = Attributor()
    r1 = a.request_read(SERVER, 100, 10, Call("r1"))
    a.woke(wake(SERVER, 100, 11, 300))                     # 300 acts for r1
    r2 = a.request_read(SERVER, 100, 20, Call("r2"))
    a.woke(wake(SERVER, 100, 21, 300))                     # 300 still acts for r1: not a hand-off
    a.woke(wake(SERVER, 100, 22, 400))                     # r2 was already spent on that wake-up
    e3, e4 = open_(SERVER, 300, 23), open_(SERVER, 400, 24)
    a.event(e3)
    a.event(e4)
    out = verdicts(a.response_written(r1, 100, 30) + a.response_written(r2, 100, 31))
    assert out[id(e3)].quality == "wakeup" and names(out[id(e3)]) == ["r1"]
    assert out[id(e4)].quality == "ambiguous"
    assert a.wakes["refused_busy"] == 1 and a.wakes["handoffs"] == 1


def test_a_fork_from_a_thread_acting_for_a_request_belongs_to_it():
    a = Attributor()
    r1 = a.request_read(SERVER, 100, 10, Call("r1"))
    r2 = a.request_read(SERVER, 100, 20, Call("r2"))
    a.woke(wake(SERVER, 100, 21, 300))
    f = fork(SERVER, 300, 22, 900)
    a.event(f)
    child = open_(900, 900, 23, ancestry=[SERVER])
    a.event(child)
    a.response_written(r1, 100, 30)
    out = verdicts(a.response_written(r2, 100, 31))
    assert out[id(f)].quality == out[id(child)].quality == "wakeup"
    assert names(out[id(child)]) == ["r2"] and out[id(child)].branch == 900


def test_a_candidate_that_names_nothing_of_the_kind_keeps_the_event_ambiguous():
    """The one call that names the file is not taken when another in flight names no file at all:
    that one may have opened it without naming it (bench/attribution.py's cross-named scenarios)."""
    named, derived = cand({"path": "/srv/d/call-3.txt"}), cand({"n": 3})
    assert picked(open_(SERVER, 1, 5, "/srv/d/call-3.txt"), [named, derived]) == []
    lister = cand({"path": "/srv/d"})                       # a directory above the opened file
    assert picked(open_(SERVER, 1, 5, "/srv/d/call-3.txt"), [lister, derived]) == []
    # near misses: every other candidate names another file, so the naming one is taken
    assert picked(open_(SERVER, 1, 5, "/srv/d/call-3.txt"), [lister, cand({"path": "/srv/e/x"})]) == [lister]
    assert picked(open_(SERVER, 1, 5, "/srv/d/call-3.txt"), [named, cand({"name": "other.txt"})]) == [named]
    url = cand({"url": "http://127.0.0.1:8080/"})
    assert picked(connect_("127.0.0.1", 8080), [url, cand({"n": 1})]) == []
    assert picked(connect_("127.0.0.1", 8080), [url, cand({"target": "127.0.0.3:9000"})]) == [url]
    assert picked(exec_("/usr/bin/ls", ["ls", "-l"]), [cand({"cmd": ["ls", "-l"]}), cand({"n": 2})]) == []
