#!/usr/bin/env python3
"""Optuna's TPE sampler on the tuning suite's scenarios, through `autodebug sim eval`.

Writes one JSON line per (scenario, seed) run: {"planner": "optuna-tpe", "scenario", "seed",
"evals": [{"config", "failed"}]}, which `autodebug sim tune-suite --external FILE` scores on the
same truth, seeds and budget as the built-in planners:

    cargo build --release -p autodebug-cli
    python3 benches/optuna_tpe.py --generate 30 --seed 1 --seeds 10 --budget 150 --out optuna.jsonl
    ./target/release/autodebug sim tune-suite --generate 30 --seed 1 --external optuna.jsonl

Optuna is installed from PyPI into ~/.cache/autodebug/optuna-venv on first use. Each knob is a
categorical parameter (its level index as an integer for numeric knobs, so TPE sees the order);
constraints go through the sampler's constraints_func (each constraint's measured value minus its
bound, > 0 breaks it); an engine that fails to start is told as a FAILED trial. A run stops at its
first evaluation whose noise-free value is within 2% of the optimum (`with_truth`, used only to
stop early: the sampler never sees it), since later evaluations do not change that figure.
"""
import argparse
import json
import os
import subprocess
import sys

VENV = os.path.expanduser("~/.cache/autodebug/optuna-venv")


def ensure_optuna():
    try:
        import optuna  # noqa: F401
        return
    except ImportError:
        pass
    python = os.path.join(VENV, "bin", "python3")
    if os.path.realpath(sys.prefix) == os.path.realpath(VENV):
        sys.exit("optuna is missing from %s; remove it and run again" % VENV)
    if not os.path.exists(python):
        subprocess.check_call([sys.executable, "-m", "venv", VENV])
        subprocess.check_call([python, "-m", "pip", "install", "--quiet", "optuna"])
    os.execv(python, [python] + sys.argv)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--autodebug", default="target/release/autodebug")
    parser.add_argument("--generate", type=int, default=0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budget", type=int, default=150)
    parser.add_argument("--skip-builtin", action="store_true")
    parser.add_argument("--scenarios", default="")
    parser.add_argument("--out", default="-")
    args = parser.parse_args()
    ensure_optuna()
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    describe = [args.autodebug, "sim", "eval", "--describe", "--with-optimum",
                "--generate", str(args.generate), "--seed", str(args.seed)]
    if args.skip_builtin:
        describe.append("--skip-builtin")
    if args.scenarios:
        describe += ["--scenarios", args.scenarios]
    scenarios = json.loads(subprocess.check_output(describe))
    server = subprocess.Popen([args.autodebug, "sim", "eval"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, bufsize=1)
    out = sys.stdout if args.out == "-" else open(args.out, "w")

    def ask(request):
        server.stdin.write(json.dumps(request) + "\n")
        server.stdin.flush()
        answer = json.loads(server.stdout.readline())
        if "error" in answer and "valid" not in answer:
            sys.exit("sim eval: %s" % answer["error"])
        return answer

    for s in scenarios:
        optimum = s["optimum"]
        maximize = s["objective"]["direction"] == "maximize"

        def within(value):
            if value is None:
                return False
            if maximize:
                return value >= optimum - abs(optimum) * 0.02
            return value <= optimum + abs(optimum) * 0.02

        for seed in range(args.seeds):
            sampler = optuna.samplers.TPESampler(
                seed=seed, constraints_func=lambda t: t.user_attrs["constraints"])
            study = optuna.create_study(direction="maximize" if maximize else "minimize",
                                        sampler=sampler)
            evals = []
            for k in range(1, args.budget + 1):
                trial = study.ask()
                config = {}
                for knob in s["knobs"]:
                    levels = knob["levels"]
                    if knob["ordinal"]:
                        config[knob["flag"]] = levels[trial.suggest_int(knob["flag"], 0, len(levels) - 1)]
                    else:
                        config[knob["flag"]] = trial.suggest_categorical(knob["flag"], levels)
                answer = ask({"scenario": s["name"], "config": config, "seed": seed, "eval": k,
                              "with_truth": True})
                failed = answer["failed"] or not answer["feasible"]
                evals.append({"config": config, "failed": failed})
                if not answer["valid"] or answer["failed"] or answer["value"] is None:
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                else:
                    trial.set_user_attr("constraints", answer["constraint_violations"])
                    study.tell(trial, answer["value"])
                if within(answer.get("true_value")):
                    break
            out.write(json.dumps({"planner": "optuna-tpe", "scenario": s["name"], "seed": seed,
                                  "evals": evals}) + "\n")
            out.flush()
    server.stdin.close()
    server.wait()


if __name__ == "__main__":
    main()
