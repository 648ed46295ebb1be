"""The measuring core every benchmark family shares: each measurement a process of its own
(``bench.workers``) whose last line is its JSON; the matmul reference measured around it, from
which other load is detected (``contended``) and corrected for (``adjusted``); runs merged
measurement by measurement from the least contended.
"""
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

RESULT_TAG = "BENCH_RESULT "


# running the workers
def run_worker(kind, params, timeout, log):
    cmd = [sys.executable, "-m", "bench.workers", kind, json.dumps(params)]
    return _run(cmd, timeout, log, "%s %s" % (kind, _short(params)))


def _short(params):
    keep = {k: v for k, v in params.items() if k in ("label", "batch", "what", "query_block", "n")}
    return " ".join("%s=%s" % kv for kv in keep.items())


def _run(cmd, timeout, log, title):
    start = time.perf_counter()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, timeout=timeout, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
        output, code = proc.stdout, proc.returncode
    except subprocess.TimeoutExpired as e:
        output, code = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or ""), "timeout"
    wall = time.perf_counter() - start
    for line in reversed(output.splitlines()):
        idx = line.find(RESULT_TAG)
        if idx >= 0:
            result = json.loads(line[idx + len(RESULT_TAG):])
            result["process_seconds"] = wall
            log("  %-58s %6.1f s" % (title, wall))
            for r in result.get("results", [result]):
                _log_result(r, log)
            return result
    tail = "\n".join(output.splitlines()[-15:])
    log("  %-58s FAILED (%s)\n%s" % (title, code, tail))
    return {"error": "exit %s: %s" % (code, tail[-2000:]), "process_seconds": wall}


def _log_result(r, log):
    if "error" in r:
        log("    failed: %s" % r["error"].splitlines()[-1][:200])
    elif "seconds" in r:
        log("    %s%.4f s (min %.4f)%s%s" % ("%s b%s: " % (r["what"], r["batch"]) if "what" in r else "", r["seconds"],
                                            r.get("seconds_min", r["seconds"]),
                                            "  peak %.0f MB" % r["peak_rss_mb"] if "peak_rss_mb" in r else "",
                                            "  matmul %.0f GFLOP/s" % r["matmul_gflops_local"]
                                            if r.get("matmul_gflops_local") else ""))


def adjusted(row, key="seconds"):
    """``row[key]`` scaled to the run's best matmul speed: seconds x (the matmul GFLOP/s
    measured around this row) / (the best such GFLOP/s of the run). Other processes slow a
    measurement and its own matmul reference alike, so comparing rows measured under
    different load compares adjusted seconds (``derive`` sets ``matmul_scale``)."""
    return row[key] * row.get("matmul_scale", 1.0)


def find(rows, label, batch, what):
    for r in rows:
        if r["label"] == label and r["batch"] == batch and r["what"] == what and "error" not in r:
            return r
    return None


# other load: a matmul reference below this fraction of the cores (other processes took
# CPU), or below this fraction of the run's best matmul speed
CONTENDED = 0.8


def contended(r, cores=None):
    cpw = r.get("matmul_cpu_per_wall_local")
    return cpw is not None and cpw < CONTENDED * (cores or os.cpu_count() or 1)


class Runner:
    """Runs measurements, each in its own process (default), or queued and run together in
    one process (``--one-process``, for the tests: one TensorFlow start-up instead of one
    per measurement; peak memory is then cumulative). ``retries``: a measurement whose own
    matmul reference shows other processes taking CPU is repeated (after a pause) up to
    that many times, and the least contended result is kept."""

    def __init__(self, one_process, timeout, log, retries=0):
        self.one_process, self.timeout, self.log, self.retries = one_process, timeout, log, retries
        self.queue, self.results = [], {}

    def add(self, key, kind, params):
        if self.one_process:
            self.queue.append((key, kind, params))
            return
        result = run_worker(kind, params, self.timeout, self.log)
        for attempt in range(self.retries):
            if not contended(result):
                break
            self.log("    contended (matmul cpu/wall %.2f): again in 20 s" % result["matmul_cpu_per_wall_local"])
            time.sleep(20)
            again = run_worker(kind, params, self.timeout, self.log)
            if "error" not in again and again.get("matmul_cpu_per_wall_local", 0) > \
                    result.get("matmul_cpu_per_wall_local", 0):
                result = again
            result["attempts"] = attempt + 2
        self.results[key] = result

    def flush(self):
        if not self.queue:
            return
        out = _run([sys.executable, "-m", "bench.workers", "many",
                    json.dumps({"jobs": [[kind, params] for _, kind, params in self.queue]})],
                   self.timeout * len(self.queue), self.log, "%d measurements in one process" % len(self.queue))
        results = out.get("results") or [{"error": out.get("error", "no result")}] * len(self.queue)
        for (key, _, _), r in zip(self.queue, results):
            self.results[key] = r
        self.queue = []

    def get(self, key):
        return self.results.get(key, {"error": "not run"})


def _row_key(section, r):
    if section == "nets":
        return r["label"], r["batch"], r["what"]
    return r.get("query_block") if section == "query_block" else r.get("batch")


def merge_runs(runs):
    """Several runs of the same plan -> one, each measurement (net row, Keras row, query
    block) taken from the run where its own matmul reference was fastest, i.e. where it
    was least slowed by other load. Every row keeps the reference measured with it, so the
    ratios stay same-process ratios; the first run gives everything else (pipeline,
    Horovod, complexity, the machine's start/end references)."""
    merged = json.loads(json.dumps(runs[0]))
    for section in ("nets", "keras", "query_block"):
        best = {}
        for run in runs:
            for r in run.get(section, []):
                key = _row_key(section, r)
                quality = -1.0 if "error" in r else r.get("matmul_gflops_local") or 0.0
                if key not in best or quality > best[key][0]:
                    best[key] = (quality, r)
        merged[section] = [best[_row_key(section, r)][1] for r in merged[section]]
    merged["meta"]["merged_from"] = [{"command": r["meta"]["command"], "date": r["meta"]["date"],
                                      "commit": r["meta"]["commit"]} for r in runs]
    merged["errors"] = [e for e in merged.get("errors", []) if e["section"] not in ("nets", "keras", "query_block")]
    for section in ("nets", "keras", "query_block"):
        merged["errors"] += [{"section": section, "error": r["error"][:300]} for r in merged[section] if "error" in r]
    return merged
