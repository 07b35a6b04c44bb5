"""The committed gRPC stubs are fresh (regenerated = committed), import under our package path, and round-trip."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROTO_PKG = Path("services/serve/_proto")
LIGHT_PKG = Path("clients/python/alarm_client/_proto")  # the light client's copy, from the same script
GENERATED = ["alarm/v1/alarm_pb2.py", "alarm/v1/alarm_pb2.pyi", "alarm/v1/alarm_pb2_grpc.py"]
SERVICER_PATH = "services.serve.proxy.add_alarm_service"  # the generated registration, with our parser


def test_committed_stubs_match_a_fresh_generation(tmp_path):
    if importlib.util.find_spec("grpc_tools") is None:
        pytest.skip("grpcio-tools is not installed (pip install 'grpcio-tools==1.85.1'); cannot regenerate the stubs")
    run = subprocess.run(["bash", str(ROOT / "scripts/gen_protos.sh"), str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    for root in (PROTO_PKG, LIGHT_PKG):
        for rel in GENERATED:
            fresh = (tmp_path / root / rel).read_text()
            committed = (ROOT / root / rel).read_text()
            assert fresh == committed, (
                f"{root / rel} is stale: protos/ changed or grpcio-tools differs; run `bash scripts/gen_protos.sh`"
            )
        for pkg in ("", "alarm", "alarm/v1"):
            assert (ROOT / root / pkg / "__init__.py").exists()


def test_stubs_import_under_the_services_package_and_round_trip():
    from services.serve._proto.alarm.v1 import alarm_pb2 as pb
    from services.serve._proto.alarm.v1 import alarm_pb2_grpc as pb_grpc

    req = pb.GenerateRequest(
        audio_bytes=b"RIFF\x00\x01", prompt="What do you hear?", max_thinking_tokens=-1, max_tokens=256,
        sampling=pb.SamplingParams(temperature=0.0, seed=7), ensemble_adapter_ids=["alarm-ca", "alarm-p"],
        return_reasoning=True, request_id="r-1",
    )
    back = pb.GenerateRequest.FromString(req.SerializeToString())
    assert back == req
    assert back.WhichOneof("audio") == "audio_bytes"
    assert not back.HasField("system_prompt")  # optional: unset is distinguishable from ""
    assert back.sampling.HasField("temperature") and back.sampling.temperature == 0.0
    assert not back.sampling.HasField("top_p")
    assert list(back.ensemble_adapter_ids) == ["alarm-ca", "alarm-p"]

    final = pb.GenerateResponse(answer="A dog.", finish_reason=pb.STOP, usage=pb.Usage(total_tokens=3),
                                request_id="r-1")
    ev = pb.GenerateStreamResponse.FromString(pb.GenerateStreamResponse(final=final).SerializeToString())
    assert ev.WhichOneof("event") == "final" and ev.final == final
    assert pb.FinishReason.Name(0) == "FINISH_REASON_UNSPECIFIED"
    assert [pb.FinishReason.Value(n) for n in ("STOP", "LENGTH", "ABORTED")] == [1, 2, 3]

    # what Serve's grpc_options.grpc_servicer_functions will import
    import importlib

    module, _, name = SERVICER_PATH.rpartition(".")
    assert callable(getattr(importlib.import_module(module), name))
    from services.serve.app import GRPC_SERVICERS

    assert SERVICER_PATH in GRPC_SERVICERS
    assert hasattr(pb_grpc, "AlarmServiceStub") and hasattr(pb_grpc, "AlarmServiceServicer")
    full = pb.DESCRIPTOR.services_by_name["AlarmService"].full_name
    assert full == "alarm.v1.AlarmService"
    methods = pb.DESCRIPTOR.services_by_name["AlarmService"].methods_by_name
    assert set(methods) == {"Generate", "GenerateStream", "ListModels"}
    assert methods["GenerateStream"].server_streaming and not methods["Generate"].server_streaming


def test_the_service_name_constant_is_the_protos():
    from alarm.config import GRPC_SERVICE
    from services.serve._proto.alarm.v1 import alarm_pb2

    assert alarm_pb2.DESCRIPTOR.services_by_name["AlarmService"].full_name == GRPC_SERVICE
