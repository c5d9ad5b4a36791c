"""The `hired` command line: run, bench, serve-bench, eval, viz, data make.

Every bad input ends a command with one line on stderr and exit code 2: hired's own errors
(:class:`~hired.errors.HiREDError`, through :func:`cli_errors`) and typer's usage errors (an
option that is missing, unknown, not a number or out of its declared range, through
:class:`OneLineErrors`).
"""

from __future__ import annotations

import functools
import json
import math
import sys
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from hired.config import MAX_SEED
from hired.errors import HiREDError, OptionError
from hired.families import FAMILIES

try:  # typer >= 0.29 ships its own copy of click
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
except ImportError:  # pragma: no cover - older typer on click
    from click.exceptions import ClickException, NoArgsIsHelpError

# No console markup: user text (paths, prompts, model ids, answers, vLLM's log lines) is printed as
# written, "[/b]" included; hired's own colours are styles (``style=``, :func:`labelled`).
console = Console(soft_wrap=True, markup=False)
errors = Console(stderr=True, soft_wrap=True, markup=False)
HELP = (f"HiRED token dropping for vision-language models: {', '.join(f.label for f in FAMILIES.values())} "
        f"(transformers checkpoints; LLaVA-NeXT and LLaVA-1.5 under vLLM too, through the hired[vllm] plugin).")
MODEL_HELP = "demo (the bundled model, default), a preset name, a hub id or a local folder."
DEVICE_HELP = "auto, cpu, cuda or cuda:N."
DTYPE_HELP = "auto, float32, float16 or bfloat16."


class OneLineErrors(TyperGroup):
    """Typer's usage errors (missing, unknown or out-of-range options) as one line, exit code 2,
    like hired's own errors; ``hired`` alone still prints the help."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except NoArgsIsHelpError as error:
            error.show()
            sys.exit(error.exit_code)
        except ClickException as error:
            errors.print(labelled("error:", "red", error.format_message()), highlight=False)
            sys.exit(error.exit_code)
        except typer.Abort:
            errors.print("Aborted.")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(cls=OneLineErrors, add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help=HELP)


@app.callback()
def root() -> None:
    # the help is HELP (set on the app), which names every supported family
    return None


def labelled(label: str, style: str, text: str) -> Text:
    """``label`` in ``style``, then ``text`` as written (no markup is read in it)."""
    return Text.assemble((label, style), " ", text)


def cli_errors(fn: Callable) -> Callable:
    """Bad input ends the command with a one-line message and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except HiREDError as error:
            errors.print(labelled("error:", "red", str(error)), highlight=False)
            raise typer.Exit(2) from None

    return wrapper


def quiet_runtime() -> None:
    """torch threads from OMP_NUM_THREADS (checked), and no transformers progress bars (the
    "Loading weights" bar) between hired's own lines."""
    from transformers.utils import logging as transformers_logging

    from hired.loading import set_torch_threads

    set_torch_threads()
    transformers_logging.disable_progress_bar()


def hired_config(**options: Any):
    """The config of the command's HiRED options, through the one settings parser (method names
    such as "hired-official" included); a bad value is a ConfigError naming the option."""
    from hired.config import HiREDConfig
    from hired.policies import policy

    config = HiREDConfig.from_strings(options, names={k: "--" + k.replace("_", "-") for k in options})
    policy(config.method)
    return config


def finite_or_none(value: Any) -> Any:
    """JSON has no NaN: a float that is not finite becomes None (null)."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def demo_note(tokenizer: Any, prompt: str, name: str = "demo", image_token: str = "<image>") -> str:
    """What the bundled demo model is, and the words of ``prompt`` it has never seen (an image
    placeholder typed into the prompt is explained, not listed as unknown words)."""
    kind = "InternVL" if name == "demo-internvl" else "LLaVA-NeXT"
    note = (f"Model {name}: a small {kind} trained on hired's synthetic scenes; it answers questions "
            "such as 'what color is the star?', 'which letter is inside the red square?' or 'how many circles "
            "are there?' about such scenes. Pass --model for a real checkpoint.")
    if image_token in prompt:
        note += (f" The prompt holds {image_token}, the image placeholder: hired adds it itself (and the chat "
                 f"template with it), so a prompt with it is passed as written; leave it out.")
    words = [word for word, _ in
             tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str(prompt.replace(image_token, " "))]
    unknown = list(dict.fromkeys(w for w in words if tokenizer.convert_tokens_to_ids(w) == tokenizer.unk_token_id))
    if unknown:
        note += f" Words it does not know: {', '.join(unknown)}."
    return note


def format_bytes(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**30:.2f} GiB"


def format_rate(value: float | None) -> str:
    return "n/a" if finite_or_none(value) is None else f"{value:.1f} tokens/s"


@app.command()
@cli_errors
def run(
    image: str | None = typer.Option(None, "--image", "-i",
                                     help="Picture file to ask about (default: the sample scene shipped with hired)."),
    prompt: str | None = typer.Option(None, "--prompt", "-p",
                                      help="Question about the picture (default: the sample scene's question)."),
    budget: str = typer.Option("0.2", help="Share of visual tokens to keep (0.2) or a token count (576)."),
    alpha: float = typer.Option(0.5, min=0.0, max=1.0, help="Share of the budget for the full-image view."),
    allocation: str = typer.Option("exact", help="exact, or official (the published code's rounding)."),
    method: str = typer.Option("hired", help="Drop policy."),
    init_layer: int | None = typer.Option(None, help="ViT layer that measures each region's content "
                                          "(default: the family's early layer)."),
    final_layer: int | None = typer.Option(None, help="ViT layer that ranks tokens (default: feature layer)."),
    score: str | None = typer.Option(None, help="cls (CLS attention) or received (attention each token "
                                     "receives); default: cls where the ViT has a CLS token."),
    newlines: str | None = typer.Option(None, help="kept_rows, all or none: image-newline tokens after "
                                        "sub-image rows (default: kept_rows; none in official mode)."),
    model: str | None = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    max_new_tokens: int = typer.Option(32, min=1, help="Tokens to generate."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    dtype: str = typer.Option("auto", help=DTYPE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of text."),
) -> None:
    """Answer a question about a picture with HiRED applied and show what it cost.

    With no --image and no --prompt it asks the demo model about the sample scene shipped with hired."""
    import hired
    from hired.bench.timing import timed_generate
    from hired.checks import check_new_tokens
    from hired.data.scenes import sample_scene
    from hired.images import load_image
    from hired.loading import DEMOS, load

    sample = None
    if image is None:
        if prompt is not None:
            raise OptionError("--prompt needs an --image (or give neither for the sample scene)")
        image, prompt, expected = sample_scene()
        sample = f"Sample scene shipped with hired ({image}); question: {prompt!r} (expected answer: {expected!r})."
    elif prompt is None:
        raise OptionError("--image needs a --prompt (or give neither for the sample scene)")
    quiet_runtime()
    config = hired_config(budget=budget, alpha=alpha, allocation=allocation, method=method, init_layer=init_layer,
                          final_layer=final_layer, score=score, newlines=newlines)
    picture = load_image(image)
    loaded = load(model, device=device, dtype=dtype)
    check_new_tokens(loaded.model.config, max_new_tokens)
    hired.apply(loaded.model, config)
    inputs = loaded.inputs(picture, loaded.format_prompt(prompt))
    output, timing = timed_generate(loaded.model, inputs, max_new_tokens, force_length=loaded.random_weights)
    answer = loaded.processor.batch_decode(output[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0]
    report = loaded.model.hired_report
    result = {
        "model": loaded.name,
        "random_weights": loaded.random_weights,
        "image": str(image),
        "prompt": prompt,
        "answer": answer.strip(),
        "kept": report.kept,
        "total": report.total,
        "llm_image_tokens": report.llm_image_tokens,
        "llm_image_tokens_full": sum(r.llm_tokens_full for r in report.images),
        "partition_budgets": report.images[0].partition_budgets,
        "ttft_s": timing.ttft,
        "decode_tokens_per_s": timing.decode_tokens_per_s,
        "latency_s": timing.latency,
        "new_tokens": timing.new_tokens,
        "peak_memory_bytes": timing.peak_memory_bytes,
        "device": str(loaded.model.device),
    }
    if as_json:
        print(json.dumps({key: finite_or_none(value) for key, value in result.items()}, allow_nan=False))
        return
    if sample:
        console.print(sample, highlight=False)
    if loaded.random_weights:
        console.print(
            f"Model {loaded.name} has RANDOM weights: the answer is meaningless, the token counts and "
            f"timings are real. Pass --model llava-hf/llava-v1.6-vicuna-7b-hf for a real checkpoint.",
            style="yellow", highlight=False,
        )
    elif loaded.name in DEMOS:
        console.print(demo_note(loaded.processor.tokenizer, prompt, loaded.name,
                                getattr(loaded.processor, "image_token", "<image>")), style="yellow", highlight=False)
    memory_kind = "CUDA max allocated" if loaded.model.device.type == "cuda" else "peak RSS"
    console.print(labelled("Answer:", "bold", result["answer"]), highlight=False)
    console.print(
        f"Visual tokens kept: {report.kept}/{report.total} ({100 * report.kept / report.total:.1f}%), "
        f"per partition {report.images[0].kept_per_partition}; image tokens to the LLM: "
        f"{result['llm_image_tokens']} (full model: {result['llm_image_tokens_full']})"
    )
    console.print(
        f"Time to first token: {timing.ttft:.3f} s | decode: {format_rate(timing.decode_tokens_per_s)} "
        f"({plural(timing.new_tokens, 'new token')}) | peak memory: {format_bytes(timing.peak_memory_bytes)} "
        f"({memory_kind})"
    )


@app.command("eval")
@cli_errors
def evaluate(
    data: str = typer.Option(..., "--data", help="Folder with {split}.jsonl (from `hired data make`) or a JSONL file."),
    split: str = typer.Option("test", help="Split to read when --data is a folder."),
    model: str | None = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    budgets: str = typer.Option("1.0,0.4,0.2,0.1", help="Comma-separated budgets (ratios or token counts)."),
    methods: str = typer.Option(
        "hired,random,spatial,prumerge+,visionzip",
        help="Comma-separated methods; 'hired-official' is HiRED with the published allocation. "
        "The full model is always measured; adaptive methods (prumerge, prumerge+) run once.",
    ),
    out: str = typer.Option("runs/eval", help="Output folder (answers are cached here: rerun to resume)."),
    limit: int | None = typer.Option(None, min=1, help="Only the first N items."),
    batch_size: int = typer.Option(8, min=1, help="Questions per generate call."),
    max_new_tokens: int = typer.Option(8, min=1, help="Answer length limit."),
    alpha: float = typer.Option(0.5, min=0.0, max=1.0, help="HiRED's full-view share."),
    seed: int = typer.Option(0, min=0, max=MAX_SEED, help="Seed for random policies."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    dtype: str = typer.Option("auto", help=DTYPE_HELP),
) -> None:
    """Accuracy per method and budget on local VQA-style data."""
    from hired.checks import check_new_tokens, output_folder
    from hired.config import parse_budgets
    from hired.evaluation.data import load_items
    from hired.evaluation.report import header_line, rich_table, write_results
    from hired.evaluation.runner import evaluate as run_evaluation
    from hired.experiments import make_arms
    from hired.loading import load

    arms = make_arms([m.strip() for m in methods.split(",") if m.strip()], parse_budgets(budgets), alpha, seed)
    items = load_items(data, split, limit)
    output_folder(out)
    quiet_runtime()
    loaded = load(model, device=device, dtype=dtype)
    check_new_tokens(loaded.model.config, max_new_tokens)
    if loaded.random_weights:
        console.print(f"Model {loaded.name} has RANDOM weights: accuracies are meaningless.", style="yellow",
                      highlight=False)
    results = run_evaluation(loaded, items, arms, out, batch_size, max_new_tokens, alpha, seed,
                             log=lambda note: errors.print(labelled("note:", "yellow", note), highlight=False))
    paths = write_results(results, out)
    console.print(header_line(results), highlight=False)
    wide_console().print(rich_table(results))
    console.print(f"Wrote {paths['json']}, {paths['md']} and {paths['png']}", highlight=False)


def wide_console() -> Console:
    """The terminal, or for a pipe or file a console wide enough for the whole table (not one
    squeezed to 80 columns)."""
    return console if console.is_terminal else Console(width=200, markup=False)


data_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Local VQA data: synthetic scenes.")
app.add_typer(data_app, name="data")


@data_app.command("make")
@cli_errors
def data_make(
    out: str = typer.Option(..., "--out", "-o", help="Folder to write images/ and train/val/test.jsonl into."),
    n: int = typer.Option(2000, "--n", min=1, help="Number of scenes (pictures); each has up to four questions."),
    seed: int = typer.Option(0, "--seed", min=0, max=MAX_SEED,
                             help="Seed: the scenes and their split are a function of it."),
) -> None:
    """Write seeded high-resolution VQA scenes (PNG + JSONL, fixed train/val/test split)."""
    from hired.data.scenes import make_scenes

    paths = make_scenes(out, n, seed, progress=True)
    for split, path in paths.items():
        with open(path, encoding="utf-8") as f:
            console.print(f"{split}: {plural(sum(1 for _ in f), 'question')} -> {path}", highlight=False)


@app.command("bench")
@cli_errors
def bench(
    model: str | None = typer.Option(None, "--model", "-m", help="Preset (random weights), hub id or folder."),
    budgets: str = typer.Option("1.0,0.4,0.2,0.1", help="Comma-separated budgets (ratios or token counts)."),
    methods: str = typer.Option("full,hired", help="Comma-separated methods; 'full' (untouched model) always runs."),
    image: list[str] = typer.Option(["672x672"], "--image", help="Synthetic picture size WxH; repeat for several."),
    batch_size: str = typer.Option("1", help="Comma-separated batch sizes, e.g. 1,4."),
    new_tokens: int = typer.Option(32, min=1, help="Tokens generated per sequence (forced: EOS is not allowed "
                                                   "earlier)."),
    runs: int = typer.Option(5, min=1, help="Measured repetitions per arm."),
    warmup: int = typer.Option(1, min=0, help="Discarded repetitions before the measured ones."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    dtype: str = typer.Option("auto", help=DTYPE_HELP),
    memory_cap_gb: float | None = typer.Option(None, help="CUDA only: cap GPU memory (GiB, > 0); OOM runs are noted."),
    llm_layers: int | None = typer.Option(None, min=1, help="Presets: build only K language-model layers."),
    vit_layers: int | None = typer.Option(None, min=2, help="Presets: build only K vision-encoder layers."),
    alpha: float = typer.Option(0.5, min=0.0, max=1.0, help="HiRED's full-view share."),
    seed: int = typer.Option(0, min=0, max=MAX_SEED, help="Seed of the random weights and the noise pictures."),
    out: str = typer.Option("bench-out", "--out", "-o", help="Folder for results.json, results.md, speedup.png."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Time to first token, decode speed, latency and peak memory: full model vs each method and budget."""
    from hired.bench.report import header_lines, overhead_lines, rich_table, write_results
    from hired.bench.runner import run_bench
    from hired.bench.settings import BenchSettings, parse_ints, parse_size, split_list
    from hired.checks import output_folder
    from hired.config import parse_budgets

    settings = BenchSettings(
        model=model or "tiny-llava-next",
        budgets=parse_budgets(budgets),
        methods=split_list(methods),
        image_sizes=[parse_size(size) for size in image],
        batch_sizes=parse_ints(batch_size, "--batch-size"),
        new_tokens=new_tokens, runs=runs, warmup=warmup, device=device, dtype=dtype, memory_cap_gb=memory_cap_gb,
        llm_layers=llm_layers, vit_layers=vit_layers, alpha=alpha, seed=seed,
    )
    settings.validate()
    output_folder(out)
    quiet_runtime()
    results = run_bench(settings, progress=progress, log=lambda note: errors.print(labelled("note:", "yellow", note),
                                                                     highlight=False))
    paths = write_results(results, out)
    if results["model"]["random_weights"]:
        console.print(f"Model {results['model']['name']} has RANDOM weights: answers are meaningless, "
                      f"token counts and timings are real.", style="yellow", highlight=False)
    for line in header_lines(results):
        console.print(line, highlight=False)
    wide_console().print(rich_table(results))
    for line in overhead_lines(results):
        console.print(line, highlight=False)
    console.print(f"Wrote {paths['json']}, {paths['md']} and {paths['png']}", highlight=False)


@app.command("viz")
@cli_errors
def viz(
    image: str = typer.Option(..., "--image", "-i", help="Picture file."),
    prompt: str = typer.Option("Describe the picture.", "--prompt", "-p",
                               help="Question (the LLM sees it; the ViT does not)."),
    budget: str = typer.Option("0.2", help="Share of visual tokens to keep (0.2) or a token count (576)."),
    methods: str = typer.Option("hired,prumerge+,spatial", help="Comma-separated methods, one row each."),
    model: str | None = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    out: str = typer.Option("kept.png", "--out", "-o", help="PNG file to write."),
    alpha: float = typer.Option(0.5, min=0.0, max=1.0, help="HiRED's full-view share."),
    seed: int = typer.Option(0, min=0, max=MAX_SEED, help="Seed for random policies."),
    panel: int = typer.Option(240, min=96, max=2000, help="Side of each partition's picture in pixels (96 or "
                              "more: titles stay readable; narrow panels get short titles, kept/budget)."),
    colors: int | None = typer.Option(None, min=2, max=256,
                                      help="Quantise the PNG to this many colours (smaller file)."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    dtype: str = typer.Option("auto", help=DTYPE_HELP),
) -> None:
    """Draw the tokens each method keeps over the picture as the model saw it (one row per method)."""
    from hired.checks import output_file
    from hired.config import parse_budget
    from hired.experiments import method_config
    from hired.images import load_image
    from hired.loading import load
    from hired.viz import collect, draw, save_png

    names = [m.strip() for m in methods.split(",") if m.strip()]
    if not names:
        raise OptionError("--methods names no method")
    for name in names:  # unknown methods and bad budgets fail before the model loads
        method_config(name, parse_budget(budget), alpha, seed)
    output_file(out)
    picture = load_image(image)
    quiet_runtime()
    loaded = load(model, device=device, dtype=dtype)
    rows, pictures = collect(loaded.model, loaded.processor, picture, loaded.format_prompt(prompt), names,
                             parse_budget(budget), alpha, seed)
    drawing = draw(rows, pictures, panel=panel)
    try:
        save_png(drawing, out, colors)
    except OSError as error:
        raise OptionError(f"cannot write {out}: {error}") from None
    if loaded.random_weights:
        console.print(f"Model {loaded.name} has RANDOM weights: the kept tokens show the mechanics, "
                      f"not what a trained model attends to.", style="yellow", highlight=False)
    for row in rows:
        console.print(f"{row.method}: kept {row.report.kept}/{row.report.total}, per partition "
                      f"{row.report.kept_per_partition}", highlight=False)
    console.print(f"Wrote {out}: {len(rows)} rows x {rows[0].report.partitions} panels, "
                  f"{drawing.width}x{drawing.height} px", highlight=False)


@app.command("serve-bench")
@cli_errors
def serve_bench(
    vllm: str = typer.Option("vllm", "--vllm", envvar="HIRED_VLLM",
                             help="The vLLM venv's `vllm` command (hired[vllm] installed there); env HIRED_VLLM."),
    model: str | None = typer.Option(None, "--model", "-m",
                                     help="LLaVA(-NeXT) folder; default: build the benchmark model "
                                          "(demo ViT + a random 6 x 512 language model) in --work."),
    budgets: str = typer.Option("0.4,0.2,0.1", help="HiRED budgets to serve besides vanilla vLLM."),
    concurrency: str = typer.Option("1,8,32", help="Requests in flight, comma-separated."),
    requests: str | None = typer.Option(None, help="Requests per level, comma-separated (default: max(30, "
                                                  "8 x in flight)); each has a picture of its own."),
    max_tokens: int = typer.Option(16, min=1, help="Output tokens per request (EOS ignored)."),
    dtype: str = typer.Option("bfloat16", help="vLLM --dtype of the servers."),
    work: str = typer.Option("bench-serve-work", help="Scratch folder: built model, server logs."),
    out: str = typer.Option("bench-serve", "--out", "-o", help="Folder for results.json, results.md, serving.png."),
) -> None:
    """Serving throughput under load: vanilla vLLM vs vLLM + HiRED (the hired[vllm] plugin)."""
    from hired.bench.serving import ServeBenchSettings, run_serve_bench
    from hired.bench.serving_report import header_lines, rich_table, write_results
    from hired.bench.settings import parse_ints
    from hired.checks import output_folder
    from hired.config import parse_budgets

    output_folder(out)
    output_folder(work, "--work")
    quiet_runtime()
    settings = ServeBenchSettings(
        vllm=vllm, work=work, model=model, budgets=parse_budgets(budgets),
        concurrency=parse_ints(concurrency, "--concurrency"),
        requests=parse_ints(requests, "--requests", maximum=100_000) if requests else None,
        max_tokens=max_tokens, dtype=dtype,
    )
    results = run_serve_bench(settings, log=lambda line: errors.print(line, highlight=False))
    paths = write_results(results, out)
    for line in header_lines(results):
        console.print(line, highlight=False)
    (console if console.is_terminal else Console(width=220, markup=False)).print(rich_table(results))
    console.print(f"Wrote {paths['json']}, {paths['md']} and {paths['png']}", highlight=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
