"""The gRPC serving application on Ray Serve: composition root, ingress, and the generated stubs in `_proto`."""
