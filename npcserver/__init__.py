"""npcserver: an NPC dialogue server for game engines (gRPC, gRPC-Web, OpenAI REST) over a local GGUF model."""

import os

# ggml's OpenMP worker threads spin while they wait; on a small machine shared with the game (or the tests) they
# steal the cores from the thread with work (measured here: 2-thread decode fell from ~42 to ~10 tok/s). Passive
# waiting only takes effect if set before llama_cpp loads libgomp, so it is set here, when the package is imported,
# and nowhere else; code outside the package that loads llama_cpp (tests, the benchmark) imports npcserver first.
# A value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

__version__ = "0.1.0"
