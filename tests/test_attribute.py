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
        got = [r for r in cands if r.call.id == ev.path.strip("/")]
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
    from types import SimpleNamespace as NS

    from mcpwitness.decode.audit import named_by_arguments
    from mcpwitness.records import PolicyEvent

    def cand(path):
        return NS(call=NS(req=NS(params={"name": "read", "arguments": {"path": path}})))

    a, b = cand("/srv/a/secret.txt"), cand("/srv/b")

    def pe(check, path):
        return PolicyEvent("t", 1, 10, 10, 1, 0, "py", 5, 0, 10, [], False, [], check, "killed", "", "m", None, 1,
                           3, ["read"], path, None, None, None, 0)

    assert named_by_arguments(pe("open", "/srv/a/secret.txt"), [a, b]) == [a]
    assert named_by_arguments(pe("open", "/srv/b/x"), [a, b]) == [b]
    assert named_by_arguments(pe("exec", "/srv/b/x"), [a, b]) == []  # only opens are matched to arguments
