#!/usr/bin/env python3
"""The serving checks of scripts/gpu_check.sh (phase 6), against one gemmaserve binary.

On the golden tiny checkpoints of tests/data, in every process layout a GPU machine with one GPU
can run (one worker; TP=2 over the dense model and EP=2 over the MoE, two worker processes sharing
the GPU through Gloo with host staging):

  logits   `logits --all-positions` of golden sequence 0 within 1e-3 of the reference's every
           position (f32)
  greedy   `run` on golden sequence 1 (which repeats tokens beyond the sliding window): its 16
           greedy tokens are the reference's
  serve    `serve` answers the README's curl (a streamed chat completion ending in [DONE]), then
           64 concurrent greedy completions of the golden sequences each give the reference's 16
           tokens (compared as text: `detokenize` of the reference's ids)

With --throughput, instead: `gen-checkpoint` writes a random checkpoint (--preset, --layers; by
default 31B's shapes with 2 of its 60 layers, 4.8 GB, which one GPU loads in seconds) to
/dev/shm, with the tiny models' tokenizer (bench sends token ids), `serve` runs it (bf16 on a
GPU), and `gemmaserve bench` (128 prompt and 128 output tokens a request) reports output tokens/s
and latencies at concurrency 1, 32 and 128, one BENCH line each; then the same server with
--enforce-eager (decode steps op by op, no CUDA graphs) at concurrency 1 and 32, for comparison.

Python's standard library only: the GPU machine has none of our packages. With --device cpu the
same checks run here (gpu_check.sh --dry-run does so, so that a broken check shows up in CI, not
in the few minutes a GPU is lent). One line per check on stdout, PASS or FAIL; exit status 1 when
one failed. Every process's output goes to --out.

  scripts/serve_check.py --gemmaserve build/tools/gemmaserve --device cpu --out /tmp/serve_check
  scripts/serve_check.py --gemmaserve build/tools/gemmaserve --device cpu --out /tmp/throughput \
      --throughput --preset tiny-dense --layers 0
"""

import argparse
import concurrent.futures
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"
LOGIT_TOLERANCE = 1e-3  # tests/data/README.md: a float32 engine's acceptance bound
CONCURRENT_REQUESTS = 64
# Two workers sharing one GPU each hold this share of it (the default 0.9 is per worker).
SHARED_GPU_UTILIZATION = "0.4"


def reference(model):
    with open(DATA / "ref" / f"gemma4-tiny-{model}.json") as f:
        return json.load(f)["sequences"]


def ids_flag(ids):
    return ",".join(str(i) for i in ids)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Checker:
    def __init__(self, gemmaserve, device, out, deadline):
        self.gemmaserve = str(Path(gemmaserve).resolve())
        self.device = device
        self.out = out
        self.deadline = deadline
        self.failed = 0
        self.runs = 0

    def seconds_left(self):
        return self.deadline - time.monotonic()

    def record(self, name, ok, note, started):
        self.failed += not ok
        print(f"{'PASS' if ok else 'FAIL'} {time.monotonic() - started:6.1f}s  {name}: {note}",
              flush=True)

    def layout_flags(self, layout):
        """--tp/--ep and, where two workers share this machine's one GPU, their memory share."""
        if not layout:
            return []
        flags = layout.split()
        if self.device != "cpu":
            flags += ["--gpu-memory-utilization", SHARED_GPU_UTILIZATION]
        return flags

    def command(self, name, args, timeout):
        """Runs gemmaserve ARGS; its stdout, or an exception naming the log on failure."""
        self.runs += 1
        log = self.out / f"{self.runs:02d}-{name}.log"
        argv = [self.gemmaserve] + args
        with open(log, "w") as f:
            f.write("+ " + " ".join(argv) + "\n")
            f.flush()
            result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=f, text=True,
                                    timeout=min(timeout, max(1, self.seconds_left())))
        if result.returncode != 0:
            raise RuntimeError(f"exit {result.returncode} (see {log.name})")
        return result.stdout

    def check(self, name, body):
        """Runs one check: BODY returns (ok, note) or raises."""
        started = time.monotonic()
        if self.seconds_left() < 5:
            self.record(name, False, "out of time", started)
            return
        try:
            ok, note = body()
        except Exception as e:  # a check's failure, whatever raised it, is the check's FAIL
            ok, note = False, f"{type(e).__name__}: {e}"
        self.record(name, ok, note, started)

    # --- logits and greedy tokens -------------------------------------------------------------

    def logits(self, model, layout):
        seq = reference(model)[0]
        stdout = self.command(f"logits-{model}", [
            "logits", "--model", str(DATA / f"gemma4-tiny-{model}"), "--device", self.device,
            "--tokens", ids_flag(seq["input_ids"]), "--all-positions"] +
            self.layout_flags(layout), timeout=120)
        got = json.loads(stdout.strip().splitlines()[-1])["logits"]
        want = seq["all_logits"]
        if len(got) != len(want) or any(len(g) != len(w) for g, w in zip(got, want)):
            return False, f"{len(got)} rows of logits, the reference has {len(want)}"
        worst = max(abs(g - w) for gr, wr in zip(got, want) for g, w in zip(gr, wr))
        return worst <= LOGIT_TOLERANCE, (
            f"max |Δlogit| {worst:.2e} over {len(want)} positions (bound {LOGIT_TOLERANCE:g})")

    def greedy(self, model, layout):
        seq = reference(model)[1]
        want = seq["greedy_new_tokens"]
        stdout = self.command(f"run-{model}", [
            "run", "--model", str(DATA / f"gemma4-tiny-{model}"), "--device", self.device,
            "--prompt-ids", ids_flag(seq["input_ids"]), "--max-tokens", str(len(want)),
            "--temperature", "0", "--ignore-eos", "--json"] + self.layout_flags(layout),
            timeout=120)
        got = json.loads(stdout.strip().splitlines()[-1])["output_ids"]
        return got == want, f"{len(got)} tokens" + ("" if got == want else f": {got} != {want}")

    # --- serve --------------------------------------------------------------------------------

    def start_server(self, name, model_dir, flags):
        """serve on free ports, its output in the log; (process, HTTP base URL, gRPC address)."""
        http_port, grpc_port = free_port(), free_port()
        self.runs += 1
        log = self.out / f"{self.runs:02d}-serve-{name}.log"
        argv = [self.gemmaserve, "serve", "--model", str(model_dir), "--device", self.device,
                "--http-port", str(http_port), "--grpc-port", str(grpc_port),
                "--internal-port", str(free_port()), "--worker-metrics-port", "-1",
                "--log-level", "info"] + flags
        with open(log, "w") as f:
            f.write("+ " + " ".join(argv) + "\n")
            f.flush()
            server = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT)
        return server, log, f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}"

    @staticmethod
    def stop_server(server):
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()

    def serve(self, model, layout):
        """Starts serve, runs the README's curl and the concurrent requests, stops it."""
        model_dir = DATA / f"gemma4-tiny-{model}"
        server, log, base, _ = self.start_server(model, model_dir, self.layout_flags(layout))
        try:
            self.check(f"serve {model} {layout or '1 worker'}: ready",
                       lambda: self.wait_ready(server, base, log))
            if server.poll() is None:
                self.check(f"serve {model} {layout or '1 worker'}: the README's curl",
                           lambda: self.readme_curl(base, model_dir.name))
                self.check(f"serve {model} {layout or '1 worker'}: {CONCURRENT_REQUESTS} "
                           "concurrent greedy requests",
                           lambda: self.concurrent(base, model, model_dir))
        finally:
            self.stop_server(server)

    # --- throughput -----------------------------------------------------------------------------

    def throughput(self, preset, layers, concurrencies, eager_concurrencies):
        """Writes a random checkpoint, serves it and benchmarks it at each concurrency, then
        without decode graphs at each of eager_concurrencies."""
        shm = Path("/dev/shm")
        with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None) as tmp:
            checkpoint = Path(tmp) / preset
            written = self.failed
            self.check(f"gen-checkpoint {preset}" + (f", {layers} layers" if layers else ""),
                       lambda: self.generate(preset, layers, checkpoint))
            if self.failed > written:
                return
            flags = ["--precision", "bf16"] if self.device != "cpu" else []
            for mode, extra, levels in (("", [], concurrencies),
                                        ("eager ", ["--enforce-eager"], eager_concurrencies)):
                server, log, base, grpc = self.start_server(preset, checkpoint, flags + extra)
                try:
                    self.check(f"serve {mode}{preset}: ready",
                               lambda: self.wait_ready(server, base, log))
                    for concurrency in levels:
                        if server.poll() is not None:
                            break
                        self.check(f"bench {mode}{preset}, concurrency {concurrency}",
                                   lambda: self.bench(grpc, concurrency, mode))
                finally:
                    self.stop_server(server)

    def generate(self, preset, layers, checkpoint):
        self.command(f"gen-checkpoint-{preset}", [
            "gen-checkpoint", "--preset", preset, "--layers", str(layers),
            "--out", str(checkpoint)], timeout=120)
        # Random checkpoints have no tokenizer; bench sends token ids, so the tiny one serves (ids
        # past its 512 detokenize to nothing).
        shutil.copy(DATA / "gemma4-tiny-dense" / "tokenizer.json", checkpoint)
        size = sum(f.stat().st_size for f in checkpoint.iterdir())
        return True, f"{size / 1e9:.2f} GB in {checkpoint}"

    def bench(self, grpc, concurrency, mode=""):
        requests = max(2 * concurrency, 4)
        stdout = self.command(f"bench-{mode.strip() or 'graphs'}-{concurrency}", [
            "bench", "--server", grpc, "--api", "grpc", "--num-requests", str(requests),
            "--concurrency", str(concurrency), "--input-len", "128", "--output-len", "128",
            "--json"], timeout=180)
        report = json.loads(stdout)
        line = (f"BENCH {mode}concurrency {concurrency}: {report['output_tokens_per_s']:.1f} output "
                f"tokens/s, {report['requests_per_s']:.2f} requests/s, TTFT p50 "
                f"{report['ttft_ms']['p50']:.1f} ms, inter-token p50 "
                f"{report['inter_token_ms']['p50']:.2f} ms p99 "
                f"{report['inter_token_ms']['p99']:.2f} ms ({requests} requests of 128 + 128 tokens)")
        print(line, flush=True)
        return report["failed"] == 0, f"{requests - report['failed']} of {requests} requests ok"

    def wait_ready(self, server, base, log):
        started = time.monotonic()
        while time.monotonic() - started < min(120, self.seconds_left()):
            if server.poll() is not None:
                return False, f"serve exited {server.returncode} (see {log.name})"
            try:
                with urllib.request.urlopen(base + "/ready", timeout=2) as response:
                    if response.status == 200:
                        kv = [line.split("] ", 1)[-1] for line in open(log, errors="replace")
                              if "for the KV cache" in line]
                        return True, "; ".join(kv) or "ready"
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.25)
        return False, f"not ready after {time.monotonic() - started:.0f}s (see {log.name})"

    def readme_curl(self, base, model_name):
        body = json.dumps({"model": model_name,
                           "messages": [{"role": "user", "content": "Hello!"}],
                           "max_tokens": 16, "stream": True})
        if shutil.which("curl"):
            result = subprocess.run(
                ["curl", "-sN", base + "/v1/chat/completions", "-H",
                 "content-type: application/json", "-d", body],
                stdout=subprocess.PIPE, text=True, timeout=60)
            stream, client = result.stdout, "curl"
        else:
            request = urllib.request.Request(base + "/v1/chat/completions", body.encode(),
                                             {"content-type": "application/json"})
            with urllib.request.urlopen(request, timeout=60) as response:
                stream, client = response.read().decode(), "urllib (no curl here)"
        events = [line[len("data: "):] for line in stream.splitlines()
                  if line.startswith("data: ")]
        if not events or events[-1] != "[DONE]":
            return False, f"{client}: the stream does not end in [DONE]: {stream[-200:]!r}"
        chunks = [json.loads(e) for e in events[:-1]]
        text = "".join(c["choices"][0]["delta"].get("content") or ""
                       for c in chunks if c.get("choices"))
        finish = [c["choices"][0].get("finish_reason") for c in chunks if c.get("choices")]
        return bool(text) and finish[-1] in ("stop", "length"), (
            f"{client}: {len(chunks)} chunks, {len(text)} characters, finish {finish[-1]}")

    def concurrent(self, base, model, model_dir):
        sequences = reference(model)
        lines = "".join(json.dumps({"ids": s["greedy_new_tokens"]}) + "\n" for s in sequences)
        self.runs += 1
        log = self.out / f"{self.runs:02d}-detokenize-{model}.log"
        with open(log, "w") as f:
            result = subprocess.run([self.gemmaserve, "detokenize", "--model", str(model_dir),
                                     "--jsonl"], input=lines, stdout=subprocess.PIPE, stderr=f,
                                    text=True, timeout=60, check=True)
        want = [json.loads(line)["text"] for line in result.stdout.splitlines()]

        def complete(i):
            seq = sequences[i % len(sequences)]
            body = json.dumps({"model": model_dir.name, "prompt": seq["input_ids"],
                               "max_tokens": len(seq["greedy_new_tokens"]), "temperature": 0,
                               "ignore_eos": True}).encode()
            request = urllib.request.Request(base + "/v1/completions", body,
                                             {"content-type": "application/json"})
            with urllib.request.urlopen(request, timeout=120) as response:
                answer = json.loads(response.read())
            return answer["choices"][0]["text"], answer["usage"]["completion_tokens"]

        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(CONCURRENT_REQUESTS) as pool:
            answers = list(pool.map(complete, range(CONCURRENT_REQUESTS)))
        took = time.monotonic() - started
        wrong = [i for i, (text, count) in enumerate(answers)
                 if text != want[i % len(want)] or count != 16]
        note = (f"{CONCURRENT_REQUESTS - len(wrong)} of {CONCURRENT_REQUESTS} give the reference's "
                f"16 tokens in {took:.1f}s")
        if wrong:
            i = wrong[0]
            note += f"; request {i}: {answers[i]!r}, want {want[i % len(want)]!r}"
        return not wrong, note


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gemmaserve", required=True, help="the binary to check")
    parser.add_argument("--device", default="cuda", help="cpu or cuda (default cuda)")
    parser.add_argument("--out", required=True, help="folder for every process's output")
    parser.add_argument("--budget-s", type=float, default=300, help="time for all checks")
    parser.add_argument("--throughput", action="store_true",
                        help="benchmark a random checkpoint instead of the checks")
    parser.add_argument("--preset", default="31b", help="with --throughput (default 31b)")
    parser.add_argument("--layers", type=int, default=2,
                        help="with --throughput: decoder layers, 0 = the preset's (default 2)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    checker = Checker(args.gemmaserve, args.device, out, time.monotonic() + args.budget_s)
    if args.throughput:
        checker.throughput(args.preset, args.layers, (1, 32, 128), (1, 32))
        return 1 if checker.failed else 0
    # The three layouts one GPU can hold, on the model each is for.
    for model, layout in (("dense", ""), ("dense", "--tp 2"), ("moe", ""), ("moe", "--ep 2")):
        name = f"{model} {layout or '1 worker'} on {args.device}"
        checker.check(f"logits {name}", lambda: checker.logits(model, layout))
        checker.check(f"greedy {name}", lambda: checker.greedy(model, layout))
    checker.serve("dense", "")
    checker.serve("moe", "--ep 2")
    return 1 if checker.failed else 0


if __name__ == "__main__":
    sys.exit(main())
