"""Planner server and client on loopback with tiny random models: answers equal the in-process
planner's, sessions are independent, bad input is refused with a clear error while the server
keeps serving, the queue is bounded, killed clients free their sessions, clients reconnect after
a server restart, and the CLI serves a converted checkpoint."""
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import connect

from vjepa_jax import planning
from vjepa_jax.planning import __main__ as planning_cli
from vjepa_jax.serve import protocol
from vjepa_jax.serve import server as server_lib
from vjepa_jax.serve.client import PlannerClient
from vjepa_jax.serve.client import ServerBusy
from vjepa_jax.serve.client import ServerError

ROOT = pathlib.Path(__file__).resolve().parents[1]
FAST = dict(samples=16, iterations=2, topk=4)
# Encoding it keeps the planner thread busy for about a second on 2 CPU cores: long enough to
# act while it runs.
LONG_SCHEDULE = 200


def _images(seed, n, size=64):
  rng = np.random.default_rng(seed)
  return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def _pose(seed):
  rng = np.random.default_rng(seed)
  return np.concatenate([rng.normal(0, 0.1, 3), [3.1, 0.0, 0.0, 0.5]]).astype(np.float32)


@pytest.fixture(scope="module")
def models():
  return planning_cli.random_tiny_models(seed=0)


@pytest.fixture(scope="module")
def fast(models):
  with server_lib.start_server(*models, server_lib.planner_config(**FAST), max_queue=2,
                               max_message_bytes=1 << 20) as handle:
    yield handle


@pytest.fixture(scope="module")
def busy(models):
  """The fast planner with room for one waiting request and long goal schedules."""
  with server_lib.start_server(*models, server_lib.planner_config(**FAST), max_queue=1,
                               max_message_bytes=16 << 20) as handle:
    yield handle


@pytest.fixture(scope="module")
def reference(models):
  """In-process planner with the fast config, and plan n of a session's key."""
  planner = planning.Planner(*models, server_lib.planner_config(**FAST))
  key = lambda n: jax.random.fold_in(jax.random.key(planner.cfg.seed), n)  # noqa: E731
  return planner, key


def _long_schedule():
  return [(np.zeros((64, 64, 3), np.uint8), 1)] * LONG_SCHEDULE


def _wait_for(predicate, what, timeout=30.0):
  deadline = time.monotonic() + timeout
  while not predicate():
    if time.monotonic() > deadline:
      raise AssertionError(f"timed out waiting for {what}")
    time.sleep(0.005)


def test_client_module_does_not_import_jax():
  code = ("import sys, vjepa_jax.serve.client; "
          "bad = [m for m in ('jax', 'jaxlib', 'flax') if m in sys.modules]; "
          "sys.exit(f'client imported {bad}' if bad else 0)")
  subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                 env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_protocol_round_trips_arrays_and_refuses_malformed_ones():
  msg = {"type": "plan", "frame": _images(0, 1)[0], "pose": np.arange(7, dtype=np.float64),
         "n": np.int32(3), "nested": [np.zeros((2, 0), np.bool_)]}
  back = protocol.unpack(protocol.pack(msg))
  np.testing.assert_array_equal(back["frame"], msg["frame"])
  assert back["frame"].dtype == np.uint8 and back["pose"].dtype == np.float64
  assert back["n"] == 3 and back["nested"][0].shape == (2, 0)
  with pytest.raises(TypeError, match="only bool, int and float"):
    protocol.pack({"x": np.array(["a"], object)})
  bad = {"__ndarray__": True, "dtype": "<f4", "shape": [3], "data": b"\0" * 8}
  with pytest.raises(protocol.ProtocolError, match="needs 12 bytes"):
    protocol.unpack(protocol.pack({"x": bad}))
  with pytest.raises(protocol.ProtocolError, match="not allowed"):
    protocol.unpack(protocol.pack({"x": {**bad, "dtype": "|O"}}))
  with pytest.raises(protocol.ProtocolError, match="text message"):
    protocol.unpack("hello")
  with pytest.raises(protocol.ProtocolError, match="not valid msgpack"):
    protocol.unpack(b"\xc1\xc1")


def test_two_concurrent_clients_get_correct_independent_answers(fast, reference):
  """Each client's plans equal the in-process planner's for its own goal, frames and key
  stream, however the two interleave on the server."""
  planner, key = reference
  inputs = {c: (_images(10 + c, 1)[0], _images(20 + c, 3), [_pose(30 + c + i) for i in range(3)])
            for c in (0, 1)}
  got, errors = {}, []

  def run(c):
    try:
      goal, frames, poses = inputs[c]
      with PlannerClient("127.0.0.1", fast.port) as client:
        client.set_goal(goal)
        got[c] = [(client.plan(f, p), client.last_result) for f, p in zip(frames, poses)]
    except Exception as e:  # reported by the main thread
      errors.append(e)

  threads = [threading.Thread(target=run, args=(c,)) for c in (0, 1)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert not errors, errors
  for c in (0, 1):
    goal, frames, poses = inputs[c]
    for i, (action, reply) in enumerate(got[c]):
      want = planner.plan_sequence(frames[i], poses[i], goal, key=key(i))
      np.testing.assert_allclose(action, want[0], rtol=1e-6, atol=1e-7)
      np.testing.assert_allclose(reply.actions, want, rtol=1e-6, atol=1e-7)
      assert reply.energy == pytest.approx(float(planner.last_result.energies[-1]), rel=1e-6)
      assert reply.step == i and reply.goal_index == 0 and reply.steps_left is None
      assert reply.plan_ms > 0 and reply.roundtrip_ms >= reply.plan_ms
  assert not np.allclose(got[0][0][0], got[1][0][0])


def test_follow_walks_a_goal_schedule_like_the_planner(fast, models):
  goals = _images(40, 2)
  schedule = planning.GoalSchedule([(goals[0], 2), (goals[1], 1)])
  frame, pose = _images(41, 1)[0], _pose(42)
  local = planning.Planner(*models, server_lib.planner_config(**FAST)).follow(
      schedule, lambda: (frame, pose), lambda a: None)
  executed = []
  with PlannerClient("127.0.0.1", fast.port) as client:
    actions = client.follow(schedule, lambda: (frame, pose), executed.append)
    assert client.last_result.goal_index == 1 and client.last_result.steps_left == 0
    with pytest.raises(ServerError, match="all 3 steps of the goal schedule are planned"):
      client.plan(frame, pose)
  assert len(actions) == len(executed) == 3 and actions[0].flags.writeable
  np.testing.assert_allclose(np.stack(actions), np.stack(local), rtol=1e-6, atol=1e-7)


def test_metadata_reports_model_planner_layout_and_latency(fast):
  with PlannerClient("127.0.0.1", fast.port) as client:
    client.set_goal(_images(50, 1)[0])
    client.plan(_images(51, 1)[0], _pose(52))
    meta = client.metadata()
  assert meta["image_size"] == 64 and meta["action_dim"] == 7 and meta["horizon"] == 1
  assert meta["action_layout"][0] == "dx" and meta["pose_layout"][-1] == "gripper"
  assert meta["planner"]["samples"] == 16 and meta["method"] == "cem"
  assert meta["model_config"]["predictor"]["action_dim"] == 7
  assert meta["max_message_bytes"] == 1 << 20 and meta["queue"]["limit"] == 2
  assert set(meta["latency_ms"]["plan"]) == {"decode", "queue", "plan", "encode"}
  assert meta["latency_ms"]["plan"]["plan"]["count"] >= 1


@pytest.mark.parametrize("request_, code, match", [
    ({"type": "plan", "frame": np.zeros((64, 64, 4), np.uint8)}, "bad_request", r"\[H, W, 3\]"),
    ({"type": "plan", "frame": np.zeros((64, 64), np.uint8)}, "bad_request", r"\[H, W, 3\]"),
    ({"type": "plan", "frame": np.zeros((64, 64, 3), np.float32)}, "bad_request", "uint8"),
    ({"type": "plan", "frame": [1, 2]}, "bad_request", "uint8 image array"),
    ({"type": "plan", "pose": np.zeros(6, np.float32)}, "bad_request", r"shape \[7\]"),
    ({"type": "plan", "pose": np.array([0, 0, 0, 0, 0, np.nan, 0])}, "bad_request",
     "non-finite"),
    ({"type": "plan", "pose": None}, "bad_request", "float array"),
    ({"type": "dance"}, "unknown_request", "unknown request type 'dance'"),
    ({"no": "type"}, "unknown_request", "unknown request type None"),
    ({"type": "set_goal"}, "bad_request", "exactly one of"),
    ({"type": "set_goal", "schedule": [[np.zeros((8, 8, 3), np.uint8), 0]]}, "bad_request",
     "at least 1 step"),
    ({"type": "set_goal", "schedule": [[np.zeros((8, 8, 3), np.uint8), 2]], "start_step": 2},
     "bad_request", "start_step"),
])
def test_bad_requests_get_clear_errors_and_the_session_goes_on(fast, request_, code, match):
  frame, pose = _images(60, 1)[0], _pose(61)
  with PlannerClient("127.0.0.1", fast.port) as client:
    client.set_goal(_images(62, 1)[0])
    if request_.get("type") == "plan":
      request_ = {"frame": frame, "pose": pose, **request_}
    with pytest.raises(ServerError, match=match) as info:
      client._request(request_)
    assert info.value.code == code
    assert client.plan(frame, pose).shape == (7,)


def test_plan_before_a_goal_and_after_a_reset_is_refused(fast):
  frame, pose = _images(63, 1)[0], _pose(64)
  with PlannerClient("127.0.0.1", fast.port) as client:
    with pytest.raises(ServerError, match="no goal set: send set_goal") as info:
      client.plan(frame, pose)
    assert info.value.code == "no_goal"
    client.set_goal(_images(65, 1)[0])
    client.plan(frame, pose)
    client.reset()
    with pytest.raises(ServerError, match="no goal set"):
      client.plan(frame, pose)


def test_malformed_and_oversize_messages(fast):
  """Garbage and text get an error reply on the same connection; a message over the limit is
  refused by the client before sending, and by the server (closing that connection only)."""
  with connect(fast.url, compression=None) as ws:
    ws.send(b"\xc1not msgpack")
    reply = protocol.unpack(ws.recv(timeout=10))
    assert reply["code"] == "bad_message" and "not valid msgpack" in reply["message"]
    ws.send("a text frame")
    assert "binary msgpack" in protocol.unpack(ws.recv(timeout=10))["message"]
    ws.send(protocol.pack({"type": "metadata"}))
    assert protocol.unpack(ws.recv(timeout=10))["type"] == "metadata"
  big = np.zeros((1024, 1024, 3), np.uint8)  # 3 MiB, over the fixture's 1 MiB
  with PlannerClient("127.0.0.1", fast.port) as client:
    with pytest.raises(ValueError, match="over the server's limit of 1.0 MiB"):
      client.set_goal(big)
    assert client.metadata()["type"] == "metadata"
  with connect(fast.url, compression=None) as ws:
    ws.send(protocol.pack({"type": "set_goal", "goal": big}))
    with pytest.raises(ConnectionClosedError) as info:
      ws.recv(timeout=10)
  assert info.value.rcvd.code == 1009
  with PlannerClient("127.0.0.1", fast.port) as client:
    _wait_for(lambda: client.metadata()["sessions"] == 1, "the closed sessions to go")


def test_token_authentication(models):
  cfg = server_lib.planner_config(**FAST)
  with server_lib.start_server(*models, cfg, token="s3cret") as handle:
    for token in (None, "wrong"):
      with pytest.raises(PermissionError, match="HTTP 401.*missing or wrong token"):
        PlannerClient("127.0.0.1", handle.port, token=token)
    with PlannerClient("127.0.0.1", handle.port, token="s3cret") as client:
      assert client.metadata()["sessions"] == 1


def test_unreachable_server_is_a_clear_connection_error(fast):
  with pytest.raises(ConnectionError, match="cannot reach the planner server"):
    PlannerClient("127.0.0.1", 1)
  with pytest.raises(ValueError, match="ws://HOST:PORT"):
    PlannerClient.from_url("http://localhost")
  assert PlannerClient.from_url(fast.url).metadata()["type"] == "metadata"


def _in_thread(fn, *args):
  out = {}

  def run():
    try:
      out["value"] = fn(*args)
    except Exception as e:  # checked by the caller
      out["error"] = e

  thread = threading.Thread(target=run)
  thread.start()
  return thread, out


def test_queue_is_bounded_and_served_in_arrival_order(busy):
  """max_queue=1: one request runs, one waits, a third is refused at once (no hang)."""
  frame, pose = _images(70, 1)[0], _pose(71)
  clients = [PlannerClient("127.0.0.1", busy.port) for _ in range(3)]
  observer = PlannerClient("127.0.0.1", busy.port)
  try:
    for c in clients[1:]:
      c.set_goal(_images(72, 1)[0])
    pending = lambda: observer.metadata()["queue"]["pending"]  # noqa: E731
    first, out_first = _in_thread(clients[0].set_goal, _long_schedule())
    _wait_for(lambda: pending() == 1, "the first request to start")
    second, out_second = _in_thread(clients[1].plan, frame, pose)
    _wait_for(lambda: pending() == 2, "the second request to queue")
    start = time.perf_counter()
    with pytest.raises(ServerBusy, match=r"server busy: 1 request running and 1 waiting.*"
                       r"--max-queue 1"):
      clients[2].plan(frame, pose)
    refused_s = time.perf_counter() - start
    assert first.is_alive(), "the refusal must not wait for the running request"
    first.join()
    second.join()
    assert "error" not in out_first and "error" not in out_second
    encode_ms = observer.metadata()["latency_ms"]["set_goal"]["plan"]["max"]
    assert refused_s * 1e3 < encode_ms
    # Arrival order: the plan waited for the whole of the schedule's encoding.
    assert clients[1].last_result.queue_ms > 0.5 * encode_ms
    assert clients[2].plan(frame, pose).shape == (7,)
  finally:
    for c in clients + [observer]:
      c.close()


_KILLED_CLIENT = """
import sys
import numpy as np
from vjepa_jax.serve.client import PlannerClient
client = PlannerClient("127.0.0.1", int(sys.argv[1]))
image = np.zeros((64, 64, 3), np.uint8)
client.set_goal(image)
print("goal set", flush=True)
if sys.stdin.readline().strip() == "long":
  client.set_goal([(image, 1)] * int(sys.argv[2]))
else:
  client.plan(image, np.zeros(7, np.float32))
"""


def _killable_client(port):
  proc = subprocess.Popen([sys.executable, "-c", _KILLED_CLIENT, str(port), str(LONG_SCHEDULE)],
                          cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
  assert proc.stdout.readline().strip() == "goal set"
  return proc


def _tell(proc, what):
  proc.stdin.write(what + "\n")
  proc.stdin.flush()


def _kill(proc):
  proc.send_signal(signal.SIGKILL)
  proc.wait()


def test_killed_client_frees_its_session_and_queue_slot(busy):
  """A client killed while its plan waits in the queue has the plan dropped at once; one killed
  while its request runs frees its session; the server then serves others as before."""
  frame, pose = _images(80, 1)[0], _pose(81)
  with PlannerClient("127.0.0.1", busy.port) as observer, \
       PlannerClient("127.0.0.1", busy.port) as worker:
    meta = lambda: observer.metadata()  # noqa: E731
    worker.set_goal(_images(82, 1)[0])
    queued = _killable_client(busy.port)
    _wait_for(lambda: meta()["sessions"] == 3, "the killable client's session")
    running, out = _in_thread(worker.set_goal, _long_schedule())
    _wait_for(lambda: meta()["queue"]["pending"] == 1, "the worker's request to start")
    _tell(queued, "plan")
    _wait_for(lambda: meta()["queue"]["pending"] == 2, "the killable client's plan to queue")
    _kill(queued)
    _wait_for(lambda: meta()["queue"]["pending"] == 1 and meta()["sessions"] == 2,
              "the killed client's queued plan and session to go")
    assert running.is_alive(), "the queued plan was dropped while the worker's request ran"
    running.join()
    assert "error" not in out

    mid_run = _killable_client(busy.port)
    _tell(mid_run, "long")
    _wait_for(lambda: meta()["queue"]["pending"] == 1, "the killable client's request to start")
    _kill(mid_run)
    _wait_for(lambda: meta()["sessions"] == 2, "the killed client's session to close")
    worker.set_goal(_images(83, 1)[0])
    assert worker.plan(frame, pose).shape == (7,)
    assert meta()["queue"]["pending"] == 0


def test_server_restart_and_client_reconnect(models, reference):
  """A call during the outage raises ConnectionError; after the restart the next call
  reconnects, re-sends the goal schedule and resumes it at the step it had reached."""
  planner, key = reference
  goals = _images(90, 2)
  frame, pose = _images(91, 1)[0], _pose(92)
  server = server_lib.PlannerServer(*models, server_lib.planner_config(**FAST))
  server.warm_up()
  handle = server_lib.ServerHandle(server, "127.0.0.1", 0)
  port = handle.port
  client = PlannerClient("127.0.0.1", port)
  try:
    client.set_goal([(goals[0], 1), (goals[1], 2)])
    client.plan(frame, pose)
    handle.stop()
    with pytest.raises(ConnectionError, match="next call reconnects"):
      client.plan(frame, pose)
    handle = server_lib.ServerHandle(server, "127.0.0.1", port)
    action = client.plan(frame, pose)
    assert (client.last_result.step, client.last_result.goal_index) == (1, 1)
    # A new session: its key stream starts again at 0.
    want = planner.plan_sequence(frame, pose, goals[1], key=key(0))[0]
    np.testing.assert_allclose(action, want, rtol=1e-6, atol=1e-7)
    assert client.metadata()["sessions"] == 1
  finally:
    client.close()
    handle.stop()


def _write_converted(directory):
  """A converted checkpoint of a random one-block model at 32 px (quick to compile)."""
  from vjepa_jax.models import EncoderConfig
  from vjepa_jax.models import PredictorConfig
  from vjepa_jax.models import pretrained
  rng = np.random.default_rng(0)
  cfgs = {"encoder": EncoderConfig(embed_dim=32, depth=1, num_heads=2, mlp_hidden=64,
                                   img_size=32),
          "predictor": PredictorConfig(embed_dim=32, predictor_embed_dim=32, depth=1,
                                       num_heads=2, mlp_hidden=64, img_size=32)}
  models = {}
  for kind, cfg in cfgs.items():
    shapes = pretrained.param_shapes(kind, cfg)
    models[kind] = (cfg, {path: rng.normal(0, 0.02, shape).astype(np.float32)
                          for path, shape in shapes.items()})
  pretrained.save_converted(directory, models, {"kind": "test"})


def test_cli_serves_a_converted_checkpoint(tmp_path):
  directory = str(tmp_path / "converted")
  _write_converted(directory)
  cmd = [sys.executable, "-m", "vjepa_jax.serve", "--converted", directory, "--port", "0",
         "--samples", "4", "--iterations", "1", "--topk", "2"]
  proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT),
                                          "JAX_PLATFORMS": "cpu"})
  try:
    line = proc.stdout.readline()
    match = re.fullmatch(r"listening on ws://127\.0\.0\.1:(\d+)\n", line)
    assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
    with PlannerClient("127.0.0.1", int(match.group(1))) as client:
      meta = client.metadata()
      assert meta["model"] == f"converted {directory}" and meta["planner"]["iterations"] == 1
      client.set_goal(_images(100, 1, size=32)[0])
      assert client.plan(_images(101, 1, size=32)[0], _pose(102)).shape == (7,)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
  finally:
    proc.kill()
    proc.wait()
  assert "warm-up" in proc.stderr.read()


def test_planner_choice_sets_the_method_or_fails_clearly():
  for method in server_lib.METHODS:
    assert server_lib.planner_config(method, samples=8).method == method
  assert server_lib.planner_config("gd", **{"gd.steps": 3}).gd.steps == 3
  with pytest.raises(ValueError, match="unknown planner 'beam'"):
    server_lib.planner_config("beam")
  with pytest.raises(ValueError, match="no field 'sampels'"):
    server_lib.planner_config(sampels=3)
