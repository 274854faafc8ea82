"""``modgap demo [--out DIR] [--limit N]``: the whole pipeline on real data, offline.

1. Embed the Fashion-MNIST test split with the pocket model: images, one generated caption per
   image, and the zero-shot class prompts (tower features cached on disk, so a second run only
   re-applies the small heads).
2. Embed the captioned scikit-image photos.
3. Write both as canonical ``.npz`` EmbeddingSets and run the benchmark on Fashion-MNIST
   (gap measures, reducers, retrieval, zero-shot, clustering), printing its table and the path
   of ``report.html``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from . import cli
from ._options import INPUT_PATH, OUTPUT_PATH, repeats_option, run_options

DEFAULT_OUT = "modgap-demo"

# The default demo is sized for about a minute warm (tower features cached) and a few minutes
# cold on an idle 2-core machine; tests/test_demo.py guards these numbers and
# benchmarks/bench_demo.py fails when the warm demo outgrows WARM_BUDGET_S.

#: Fashion-MNIST test images embedded by default: the image tower costs most of a cold run
DEMO_IMAGES = 2000

#: images benchmarked by default: every reducer is fitted, and every measure and task computed,
#: once per reducer and split, and several of them are quadratic in the number of points
BENCH_IMAGES = 1000

#: random splits of the demo's benchmark (modgap bench defaults to 5)
BENCH_REPEATS = 3

#: left out of the demo's default benchmark (``--reducers all`` or ``--full`` include them):
#: exact OT is cubic in the number of points and alone would take longer than the rest of the
#: demo; log-domain Sinkhorn runs up to 2,000 iterations per fit, and on 1,000 images took a
#: third of the benchmark's time, more than the other five rows together
SLOW_REDUCERS = ("ot-laplace", "ot-sinkhorn")

#: seconds the default warm demo may take on an idle 2-core machine
WARM_BUDGET_S = 90

#: what ``--full`` means: the whole test split embedded and benchmarked, every reducer, the
#: splits of ``modgap bench``
FULL = {"limit": None, "bench_limit": 0, "reducers": "all", "repeats": 5}


def demo_reducers(reducers: str | None) -> tuple[str | None, list[str]]:
    """The ``--reducers`` value for the benchmark, and the reducers left out by default."""
    if reducers is not None:
        return (None if reducers.strip() == "all" else reducers), []
    from ..reducers import REDUCERS

    kept = ["none", *(r for r in REDUCERS if r not in SLOW_REDUCERS)]
    return ",".join(kept), [r for r in SLOW_REDUCERS if r in REDUCERS]


def embed_fashion_mnist(
    encoder,
    limit: int | None = None,
    seed: int = 0,
    progress: bool = True,
    root: str | None = None,
):
    """The Fashion-MNIST test split embedded with the pocket model, as an EmbeddingSet.

    Every image gets one caption drawn (with ``seed``) from the generated vocabulary; the
    class prompts of :func:`modgap.datasets.captions.class_prompts` give ``class_text_emb``
    (classes x templates x d).
    """
    import numpy as np

    from ..datasets.captions import caption_vocabulary, class_prompts, image_tones, sample_captions
    from ..datasets.fashion_mnist import CLASS_NAMES, load_fashion_mnist
    from ..embeddings import EmbeddingSet
    from ..encoders.cache import digest

    images, labels = load_fashion_mnist("test", root=root, limit=limit)
    vocab = caption_vocabulary()
    caption_ids = sample_captions(labels, image_tones(images), vocab, seed)
    used, inverse = np.unique(caption_ids, return_inverse=True)
    captions = [vocab.texts[i] for i in caption_ids]
    prompts = class_prompts()
    flat_prompts = [p for per_class in prompts for p in per_class]

    towers = encoder.towers
    image_feats = towers.image_features(
        images, progress=progress, cache_key=digest("fashion-mnist", images)
    )
    caption_feats = towers.text_features(
        [vocab.texts[i] for i in used], progress=progress, cache=True
    )
    prompt_feats = towers.text_features(flat_prompts, progress=progress, cache=True)

    class_emb = encoder.project_texts(prompt_feats).reshape(len(prompts), len(prompts[0]), -1)
    return EmbeddingSet(
        encoder.project_images(image_feats),
        encoder.project_texts(caption_feats)[inverse],
        labels=labels,
        class_names=list(CLASS_NAMES),
        class_text_emb=class_emb,
        image_ids=[f"fashion-mnist/test/{i}" for i in range(len(images))],
        texts=captions,
        metadata={"model": "pocket", "data": "Fashion-MNIST test split", "caption_seed": seed},
        source="fashion-mnist test (pocket)",
    )


def embed_photos(encoder, progress: bool = False):
    """The captioned scikit-image photos, two captions each, as an EmbeddingSet.

    Tower features are cached like the Fashion-MNIST ones, so a second run loads no tower.
    """
    from ..datasets.photos import load_photos
    from ..embeddings import EmbeddingSet
    from ..encoders.cache import digest

    images, captions, text_to_image, names = load_photos()
    key = digest("skimage-photos", names, [list(im.size) for im in images])
    image_feats = encoder.towers.image_features(images, progress=progress, cache_key=key)
    text_feats = encoder.towers.text_features(captions, progress=progress, cache=True)
    return EmbeddingSet(
        encoder.project_images(image_feats),
        encoder.project_texts(text_feats),
        text_to_image=text_to_image,
        image_ids=[f"skimage.data.{n}" for n in names],
        texts=captions,
        metadata={"model": encoder.name, "data": "scikit-image photos, modgap captions"},
        source="scikit-image photos",
    )


def full_command(out: str | Path = DEFAULT_OUT) -> str:
    """The command line of the full benchmark, printed at the end of a default demo."""
    return f"modgap demo --full --out {out}-full"


def run_demo(
    out: str = DEFAULT_OUT,
    limit: int | None = DEMO_IMAGES,
    compute: Any = None,
    bench: bool = True,
    progress: bool = True,
    fashion_mnist: str | None = None,
    reducers: str | None = None,
    bench_limit: int | None = BENCH_IMAGES,
    quiet: bool = False,
    repeats: int = BENCH_REPEATS,
) -> dict:
    """What ``modgap demo`` does; returns the paths it wrote and the timings.

    Everything (the embedded sets, the benchmark's results and report) is written into one
    output folder that replaces an earlier demo's in a single rename. ``limit=None`` embeds the
    whole test split and ``bench_limit=0`` benchmarks every embedded image (``--full``).
    With ``progress``, each step (embedding, each split and row of the benchmark) is one line
    on stderr with the time since the start, so a log or a pipe shows it as well as a terminal.
    """
    import numpy as np
    from rich.console import Console

    from ..bench import reducer_names, run_bench
    from ..compute import resolve
    from ..datasets.fashion_mnist import find_fashion_mnist
    from ..encoders.cache import cache_dir
    from ..encoders.pocket import PocketEncoder
    from ..errors import ModgapError
    from ..files import check_output_folder, check_paths, output_folder
    from ..io import write_embeddings
    from ..report import summary_table, write_bench
    from ._output import table_console

    compute = resolve(compute)
    if limit is not None and limit < 10:
        raise ModgapError(f"--limit must be at least 10 (one image per class), got {limit}")
    names, left_out = demo_reducers(reducers)
    names = reducer_names(names)  # unknown names fail before any model loads
    err = Console(stderr=True, quiet=quiet)
    console = Console(quiet=quiet)
    fm_root = find_fashion_mnist(fashion_mnist)  # missing data fails before any model loads
    out_dir = Path(out)
    check_paths(reads=[("--fashion-mnist", fm_root)], writes=[("--out", out_dir)])
    files = {"fashion_mnist": "fashion_mnist_pocket.npz", "photos": "photos_pocket.npz"}
    # a folder of someone else's files is refused now, not after minutes of embedding
    check_output_folder(out_dir, files["fashion_mnist"], "--out")
    t0 = time.perf_counter()

    def step(text: str) -> None:
        if progress:
            err.print(f"[{time.perf_counter() - t0:6.1f}s] {text}", soft_wrap=True, highlight=False)

    what = "all" if limit is None else f"the first {limit:,}"
    step(
        f"embedding {what} Fashion-MNIST test images, their captions and the class prompts "
        f"with the pocket model (tower features cached in {cache_dir()})"
    )
    encoder = PocketEncoder(device=compute.device)
    fashion = embed_fashion_mnist(encoder, limit, compute.seed, progress, root=fashion_mnist)
    step("embedding the captioned scikit-image photos")
    photos = embed_photos(encoder)
    t_embed = time.perf_counter() - t0
    err.print(
        f"embedded {fashion.n_images} Fashion-MNIST test images and {photos.n_images} photos "
        f"with the pocket model in {t_embed:.1f}s",
        soft_wrap=True,
        highlight=False,
    )
    result = None
    with output_folder(out_dir, marker=files["fashion_mnist"], what="--out") as tmp:
        write_embeddings(fashion, tmp / files["fashion_mnist"])
        write_embeddings(photos, tmp / files["photos"])
        if bench:
            bench_set = fashion
            if bench_limit and bench_limit < fashion.n_images:
                # the first N test images (the split is shuffled, so every class is there)
                bench_set = fashion.subset(np.arange(bench_limit))
                files["bench_input"] = "fashion_mnist_pocket_bench.npz"
                write_embeddings(bench_set, tmp / files["bench_input"])
            step(
                f"benchmarking {bench_set.n_images:,} of the {fashion.n_images:,} embedded "
                f"images: {len(names)} rows (none and each reducer) x {repeats} random splits, "
                "every task and gap measure per row"
            )
            result, views = run_bench(
                bench_set,
                reducers=names,
                repeats=repeats,
                progress=False,  # one line per step instead (below), in a terminal or a log
                console=err,
                compute=compute,
                on_step=step,
            )
            step("writing the report")
            write_bench(result, views, tmp / "bench")
            files["report"] = "bench/report.html"
    for key in ("fashion_mnist", "photos"):
        console.print(f"wrote {out_dir / files[key]}", soft_wrap=True, highlight=False)
    report = None
    if result is not None:
        table_console(width=160).print(summary_table(result)) if not quiet else None
        if left_out:
            err.print(
                f"note: {', '.join(left_out)} left out for speed; include them with --reducers all",
                soft_wrap=True,
                highlight=False,
            )
        err.print(
            "note: Fashion-MNIST captions describe the class, not the one image, so "
            "instance-level retrieval (rSum, R@1) is near chance by construction; zero-shot "
            "accuracy, AMI and the gap measures are the numbers to read here.",
            soft_wrap=True,
            highlight=False,
        )
        report = out_dir / files["report"]
        console.print(f"report: {report.resolve()}", soft_wrap=True, highlight=False)
        from ..reducers import REDUCERS

        whole = limit is None and bench_set.n_images == fashion.n_images
        if not (whole and set(REDUCERS) <= set(names) and repeats >= FULL["repeats"]):
            console.print(
                "the full benchmark (all 10,000 test images, every reducer, "
                f"{FULL['repeats']} splits; hours on 2 cores): {full_command(out)}",
                soft_wrap=True,
                highlight=False,
            )
    return {
        "fashion_mnist": out_dir / files["fashion_mnist"],
        "photos": out_dir / files["photos"],
        "report": report,
        "bench": result,
        "embed_seconds": t_embed,
        "total_seconds": time.perf_counter() - t0,
    }


@cli.command("demo")
@click.option(
    "--out", "-o", type=OUTPUT_PATH, default=DEFAULT_OUT, show_default=True, help="Output folder."
)
@click.option(
    "--limit",
    type=click.IntRange(min=10),
    default=DEMO_IMAGES,
    show_default=True,
    help="Embed only the first N Fashion-MNIST test images (--full: all 10,000).",
)
@click.option("--no-bench", is_flag=True, help="Only embed, do not benchmark.")
@click.option(
    "--reducers",
    default=None,
    help="Reducers to benchmark, comma-separated, or 'all' (default: all but the slow "
    "optimal-transport ones, 'ot-laplace' and 'ot-sinkhorn').",
)
@click.option(
    "--bench-limit",
    type=click.IntRange(min=0),
    default=BENCH_IMAGES,
    show_default=True,
    help="Benchmark only the first N embedded images (0 = all).",
)
@repeats_option(BENCH_REPEATS, " of the benchmark")
@click.option(
    "--full",
    is_flag=True,
    help="The full benchmark: all 10,000 test images embedded and benchmarked, every reducer, "
    f"{FULL['repeats']} splits (hours on 2 cores); options given explicitly still win.",
)
@click.option(
    "--fashion-mnist",
    type=INPUT_PATH,
    default=None,
    metavar="DIR",
    help="Folder with the Fashion-MNIST *-ubyte.gz files (default: the Debian package's "
    "/usr/share/datasets/fashion-mnist).",
)
@run_options
def demo_command(
    out,
    limit,
    no_bench,
    reducers,
    bench_limit,
    repeats,
    full,
    fashion_mnist,
    run,
) -> None:
    """Embed real demo data (Fashion-MNIST test split, captioned photos) with the bundled
    pocket model and benchmark it: gap measures, reducers, retrieval, zero-shot, report.
    About a minute with cached tower features, a few minutes the first time (2 cores)."""
    if full:
        ctx = click.get_current_context()
        given = {
            name
            for name in FULL
            if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT
        }
        limit, bench_limit, reducers, repeats = (
            value if name in given else FULL[name]
            for name, value in (
                ("limit", limit),
                ("bench_limit", bench_limit),
                ("reducers", reducers),
                ("repeats", repeats),
            )
        )
    run(run_demo)(
        out,
        limit,
        run.compute,
        bench=not no_bench,
        progress=run.progress,
        fashion_mnist=fashion_mnist,
        reducers=reducers,
        bench_limit=bench_limit,
        quiet=run.quiet,
        repeats=repeats,
    )
