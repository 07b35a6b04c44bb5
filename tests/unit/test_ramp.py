"""The serving drill's figures (services.ramp) from a timeline and outcomes written by hand, the sizing of its
application, and the Sampler's several-series probes: what bench/scale.py prints must mean what it says."""

from __future__ import annotations

from services import drills
from services.cluster import Nodes
from services.drills import Sampler, Timeline
from services.ramp import figures, serve_config
from services.serve.load import Load, Outcome


def drill() -> tuple[Timeline, Load]:
    """Deployed at 0; a worker node at 8, SERVING at 30; peak (6 clients) at 60, a second LLM replica and node at
    80; the busier node killed at 100 (readiness off at 101, on at 112; the node replaced at 115, the LLM replicas
    back at 130, `recovered` at 131); the load ends at 170, replicas and nodes at their minimum at 230; undeployed
    at 231, no worker node at 260."""
    t = Timeline()
    t.series = {
        "nodes/gpu": [(0, 0), (8, 1), (80, 2), (101, 1), (115, 2), (225, 1), (258, 0)],
        "replicas/llm": [(30, 1), (79, 2), (101, 1), (130, 2), (220, 1)],
        "serving": [(0, 0), (30, 1), (100, 1), (101, 0), (111, 0), (112, 1)],
        "progress/ok": [(30, 0), (33, 1), (150, 400)],
    }
    t.events = [{"t": x, "event": e} for x, e in (
        (0, "submit"), (30, "serving"), (60, "clients 6"), (100, "node killed"), (131, "recovered"),
        (170, "load end"), (230, "scaled down"), (231, "undeployed"), (260, "no worker node"))]
    load = Load("127.0.0.1:1", max_clients=6, max_requests=10, max_s=1, retries=4)
    load.outcomes = [Outcome(40, 41, "OK", 0), Outcome(41, 43, "OK", 4), Outcome(99, 100.5, "UNAVAILABLE", 0),
                     Outcome(100.2, 110, "OK", 4), Outcome(101, 101.1, "UNAVAILABLE", 0),
                     Outcome(150, 151, "OK", 0), Outcome(199, 200, "UNAVAILABLE", 4)]
    load._sent = 7
    return t, load


def test_the_figures_of_a_serving_drill():
    t, load = drill()
    out = figures(t, load)
    assert {k: out[k] for k in ("scale_up_s", "first_progress_s", "replicas_up_s", "node_replaced_s", "recovered_s",
                                "serving_again_s", "scale_down_s", "drained_s", "peak_worker_nodes")} == {
        "scale_up_s": 8, "first_progress_s": 33, "replicas_up_s": 19, "node_replaced_s": 15, "recovered_s": 30,
        "serving_again_s": 12, "scale_down_s": 60, "drained_s": 29, "peak_worker_nodes": 2}
    assert out["requests"] == {"sent": 7, "ended": 7, "OK": 2, "OK, retries=4": 2, "UNAVAILABLE": 2,
                               "UNAVAILABLE, retries=4": 1}
    assert out["unavailable_outside_kill"] == 1  # the one at 200: past recovered (131) + 30 s
    assert out["p50_s"] == 1 and out["p95_s"] == 9.8


def test_readiness_that_never_left_serving_is_back_at_once_and_no_kill_means_every_unavailable_counts():
    t, load = drill()
    t.series["serving"] = [(0, 0), (30, 1), (200, 1)]
    assert figures(t, load)["serving_again_s"] == 0
    t.events = [e for e in t.events if e["event"] not in ("node killed", "recovered")]
    out = figures(t, load)
    assert out["unavailable_outside_kill"] == 3 and "serving_again_s" not in out


def test_the_drills_application_autoscales_every_deployment_and_gives_each_llm_replica_a_gpu():
    cfg = serve_config(max_replicas=3)
    d = cfg.deployments
    assert d.colocate and d.llm.num_gpus == 1 and cfg.request_timeout_s == 60
    assert d.llm.autoscaling.target_ongoing_requests == 1  # a few clients ask for a second LLM replica
    for spec in (d.ingress, d.fusion, d.llm):
        assert (spec.autoscaling.min_replicas, spec.autoscaling.max_replicas) == (1, 3)


def test_a_probe_may_record_several_series(monkeypatch):
    monkeypatch.setattr(drills, "nodes", lambda gcs: Nodes({"gpu": 1, "ray.head.default": 1}, {}, {}))
    t = Timeline()
    Sampler(t, "127.0.0.1:1", {"replicas/": lambda: {"llm": 2, "ingress": 1}, "load": lambda: 1.5,
                                "gone": lambda: None}).sample()
    assert {k: [v for _, v in s] for k, s in t.series.items()} == {
        "nodes/gpu": [1], "launching/gpu": [0], "replicas/llm": [2], "replicas/ingress": [1], "load": [1.5]}


def test_the_encoder_nodes_loss_has_figures_and_an_unavailable_window_of_its_own():
    """The encoders' node killed at 140 (readiness off 141..145, replicas back and `encoders recovered` at 150):
    its own figures, its own window for UNAVAILABLE, and its dip is not taken for the LLM node's."""
    t, load = drill()
    t.series["serving"] = [(0, 0), (30, 1), (140, 1), (141, 0), (145, 1)]  # the LLM node's kill: no dip now
    t.events += [{"t": 140, "event": "encoder node killed"}, {"t": 150, "event": "encoders recovered"}]
    t.events.sort(key=lambda e: e["t"])
    load.outcomes.append(Outcome(139, 170, "UNAVAILABLE", 0))  # inside [140, 150 + 30]
    load._sent = 8
    out = figures(t, load)
    assert out["serving_again_s"] == 0  # the dip at 141 is after `recovered` (131): the encoders'
    assert (out["encoder_serving_again_s"], out["encoder_recovered_s"]) == (5, 10)
    assert out["unavailable_outside_kill"] == 1  # still only the one at 200


def test_a_replica_back_between_two_samples_is_recovered_by_the_drills_event():
    """The sampler saw 2 LLM replicas before and after the kill, never 1 (the replacement started within a sampling
    period): the time to recovery is the drill's `recovered` event (readiness and every replica back), not None."""
    t, load = drill()
    t.series["replicas/llm"] = [(30, 1), (79, 2), (220, 1)]
    assert figures(t, load)["recovered_s"] == 31


def test_replicas_are_back_only_once_none_is_counted_on_the_lost_node(monkeypatch):
    """Serve still counts the killed node's replica as RUNNING for a while: that count must not end the wait."""
    from services import ramp

    on = {"nodes": ["n1", "lost"], "running": 2, "serving": 1}
    monkeypatch.setattr(ramp, "actor_nodes", lambda cluster, part: on["nodes"])
    monkeypatch.setattr(ramp, "replicas", lambda app: {"llm": on["running"]})
    monkeypatch.setattr(ramp, "serving", lambda probe: on["serving"])
    assert not ramp.back(None, "alarm", "llm", "lost", 2, None)  # right after the kill: 2 "running", one is gone
    on["nodes"], on["running"] = ["n1"], 1
    assert not ramp.back(None, "alarm", "llm", "lost", 2, None)  # the loss noticed, its replacement not yet up
    on["nodes"], on["running"] = ["n1", "n3"], 2
    assert ramp.back(None, "alarm", "llm", "lost", 2, None)
    on["serving"] = 0
    assert not ramp.back(None, "alarm", "llm", "lost", 2, None)


def test_a_kill_waits_until_no_replica_is_stopping(monkeypatch):
    from services import ramp

    monkeypatch.setattr(ramp, "actor_nodes", lambda cluster, part: ["n1", "n2"])  # two live actors ...
    monkeypatch.setattr(ramp, "replicas", lambda app: {"audio": 1})  # ... one of them stopping
    assert not ramp.settled(None, "alarm", "audio")
    monkeypatch.setattr(ramp, "replicas", lambda app: {"audio": 2})
    assert ramp.settled(None, "alarm", "audio")
