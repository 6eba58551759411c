"""Serving under MLPerf LoadGen (``convkit evaluate --scenario``), one module per job:

* ``backend`` — one small interface per runtime (load / run / io-binding) and ``OrtBackend``, ONNX Runtime's.
* ``sut`` — the system under test: a queue of samples in front of backends, batched by workers.
* ``scenarios`` — LoadGen settings and log parsing for SingleStream, MultiStream, Server and Offline; the Server
  search for the highest QPS within the latency bound.
* ``cli`` — the serving options of ``convkit evaluate`` (one decorator) and their terminal lines.
* ``section`` — the serving section of eval.json / eval.md: every precision × provider, the SingleStream
  cross-check, the latency-vs-QPS figure; ``serve`` is the entry point: a ServingRequest in, a ServingResult out.
* ``recommend`` — the deployment recommendation from everything measured.

LoadGen is imported lazily: convkit evaluates without it until a scenario is asked for.
"""
