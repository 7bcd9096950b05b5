"""``python -m training``: train, register, list, promote, rollback, card, sign, keygen.

A user's mistake ends with one ``error: ...`` line on stderr and exit status 2; the store and
the production alias are left as they were.
"""

from __future__ import annotations

import argparse
import getpass
import re
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from dynaconf import ValidationError as SettingsValidationError
from pydantic import ValidationError as MetadataValidationError

from core.errors import MLOpsError
from core.settings import MODEL_NAME, Settings, SettingsError, get_settings

USAGE_ERROR = 2


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def cmd_train(args, settings: Settings, store) -> None:
    from training.pipeline import run_training
    from training.single_flight import single_flight
    from training.terminal import StepPrinter

    shown = sys.stderr.isatty() if args.progress is None else args.progress
    progress = StepPrinter(sys.stderr) if shown else None
    with single_flight(settings, store.model_name) as (result, lease):
        outcome = run_training(
            settings,
            store,
            progress,
            trainer=args.trainer,
            lease=lease,
            actor=_actor(),
            force=args.force,
        )
        result.update(outcome.to_dict())
    if outcome.version is None:
        _out(f"{outcome.model_name} {outcome.decision}: {outcome.reason}")
    else:
        _out(f"{outcome.model_name} v{outcome.version} {outcome.decision}: {outcome.reason}")


def cmd_register(args, settings: Settings, store) -> None:
    from training.register import register_file

    outcome = register_file(
        settings,
        store,
        Path(args.file),
        features=args.features,
        eval_csv=Path(args.eval) if args.eval else None,
        target=args.target,
        fmt=args.format,
        promote=args.promote,
        trust=args.trust,
        actor=_actor(),
    )
    _out(f"{outcome.model_name} v{outcome.version} {outcome.decision}: {outcome.reason}")


def cmd_list(args, settings: Settings, store) -> None:
    from training.terminal import table, when

    metric = str(settings.models.get(store.model_name, settings.training).metric)
    production = store.production_version()
    versions = store.all_metadata()
    if not versions:
        _out(f"no versions of {store.model_name!r} yet")
        return
    marks, rows = [" "], []
    for meta in versions:
        marks.append("*" if meta.version == production else " ")
        score = meta.metrics.get(metric)
        rows.append(
            [
                str(meta.version),
                "-" if score is None else f"{score:.4f}",
                meta.gate.decision if meta.gate else "-",
                meta.trainer,
                f"{meta.n_train} / {meta.n_test}",
                when(meta.trained_at),
            ]
        )
    header = ["VERSION", metric.upper(), "GATE", "TRAINER", "ROWS (TRAIN / TEST)", "TRAINED (UTC)"]
    for mark, line in zip(marks, table(header, rows, right=1), strict=True):
        _out(f"{mark} {line}")
    _out("* = production")


def cmd_promote(args, settings: Settings, store) -> None:
    before = store.production_version()
    aliases = store.promote(args.version, actor=_actor())
    _out(f"{store.model_name} production: v{aliases.production} (was {_v(before)})")


def cmd_rollback(args, settings: Settings, store) -> None:
    before = store.production_version()
    aliases = store.rollback(actor=_actor())
    _out(f"{store.model_name} production: v{aliases.production} (was {_v(before)})")


def cmd_card(args, settings: Settings, store) -> None:
    from training.cards import card_path, write_card

    write_card(store, args.version)
    path = card_path(store, args.version)
    _out(str(path) if path else f"card.html of v{args.version} written")


def _actor() -> str:
    """Who runs this command, for the audit trail."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        user = "unknown"
    return f"cli ({user}@{socket.gethostname()})"


def cmd_sign(args, settings: Settings, store) -> None:
    store.keys.require_signer()
    versions = store.versions() if args.all else [args.version]
    if not versions:
        _out(f"no versions of {store.model_name!r} yet")
    for version in versions:
        meta = store.sign(version)
        store.audit(version, "signed", _actor(), f"key {meta.signature.key_id}")
        _out(f"{store.model_name} v{version} signed by key {meta.signature.key_id}")


def keygen() -> int:
    """Print a new key pair as the two settings that take it (no settings needed)."""
    from core.signing import SigningKeys

    keys = SigningKeys.generate()
    _out(f"MLOPS_SIGNING__PRIVATE_KEY={keys.private_text()}")
    _out(f"MLOPS_SIGNING__PUBLIC_KEYS='[\"{keys.public_text()}\"]'")
    sys.stderr.write(
        f"key id {keys.signing_key_id}: the private key only where training runs, "
        "the public key everywhere\n"
    )
    return 0


def _v(version: int | None) -> str:
    return "none" if version is None else f"v{version}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Train, register, gate and promote models; settings come from "
        "settings.toml and MLOPS_* variables.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = sub.add_parser(
        "train",
        help="train, register a new version, promote it if the gate passes",
        description="Train with the configured trainer on its data and the labelled feedback "
        "so far, register a new version, and promote it when it beats production by the "
        "configured margin. Skipped when the data and the recipe are those of the production "
        "or the newest version (nothing new to learn), unless --force.",
    )
    train.add_argument(
        "--trainer", metavar="NAME", help="trainer to use instead of training.trainer"
    )
    train.add_argument(
        "--force",
        action="store_true",
        help="train even when there is nothing new to learn (a new version of the same model)",
    )
    train.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        help="show each step on stderr as it starts (default: when stderr is a terminal, so "
        "scripts and a failure's one error line stay clean)",
    )
    train.set_defaults(func=cmd_train)
    _register_parser(sub)
    listing = sub.add_parser(
        "list",
        help="list versions (* marks production)",
        description="List versions with their metric and gate decision.",
    )
    listing.set_defaults(func=cmd_list)
    promote = sub.add_parser(
        "promote",
        help="make VERSION the production model",
        description="Make VERSION production (after its signature and bytes verify).",
    )
    promote.add_argument("version", type=int, metavar="VERSION")
    promote.set_defaults(func=cmd_promote)
    rollback = sub.add_parser(
        "rollback",
        help="go back to the previous production version",
        description="Go back to the previous production version.",
    )
    rollback.set_defaults(func=cmd_rollback)
    card = sub.add_parser(
        "card",
        help="write the model card of VERSION and print its path",
        description="(Re)write card.html of VERSION and print its path.",
    )
    card.add_argument("version", type=int, metavar="VERSION")
    card.set_defaults(func=cmd_card)
    sign = sub.add_parser(
        "sign",
        help="sign VERSION (or --all) with the private key, e.g. after upgrading",
        description="Vouch for existing versions: sign each one's statement (features, classes, "
        "artifact format and sha256) with signing.private_key, after checking its artifact "
        "against its recorded sha256. Sign only versions you trust: whoever could write the "
        "store before it was signed could have replaced both.",
    )
    which = sign.add_mutually_exclusive_group(required=True)
    which.add_argument("version", type=int, nargs="?", metavar="VERSION")
    which.add_argument("--all", action="store_true", help="every version of the model")
    sign.set_defaults(func=cmd_sign)
    for command in (train, listing, promote, rollback, card, sign):
        command.add_argument(
            "--model",
            metavar="NAME",
            type=_model_name,
            help="the model (a [models.NAME] table or a model in the store); default: "
            "default_model",
        )
    gen = sub.add_parser(
        "keygen",
        help="print a new Ed25519 key pair for signing.private_key and signing.public_keys",
        description="Print a new Ed25519 key pair as MLOPS_SIGNING__* variables.",
    )
    gen.set_defaults(func=None)
    return parser


REGISTER_HELP = """Register a scikit-learn classifier or pipeline fitted elsewhere (a notebook) as
a new version of model NAME: checked (loads, fitted, takes exactly --features), stored in the
store's format, signed, described (metadata, model card) like a trained version. With --eval,
it and production are scored on that CSV with the model's metric and the promotion gate
decides; without, it is registered only (promoted if the model has no production yet, or with
--promote). A model with no [models.NAME] settings table is served all the same (queue
"predict", [batching] and [training] defaults) but cannot be retrained.

Loading a joblib file RUNS CODE from it (joblib is pickle): register only files you trust.
A skops file loads without running code; types skops does not trust are refused unless
--trust is given."""


def _register_parser(sub) -> None:
    register = sub.add_parser(
        "register",
        help="register a fitted scikit-learn classifier (joblib or skops file) as a new version",
        description=REGISTER_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    register.add_argument("file", metavar="FILE", help="the fitted estimator or pipeline")
    register.add_argument(
        "--model",
        metavar="NAME",
        type=_model_name,
        required=True,
        help="the model it becomes a version of",
    )
    register.add_argument(
        "--features",
        metavar="A,B,C",
        help="its input features, in order (default: the estimator's feature_names_in_)",
    )
    register.add_argument(
        "--format", choices=("joblib", "skops"), help="FILE's format (default: by extension)"
    )
    register.add_argument("--eval", metavar="CSV", help="evaluation set: gate the new version")
    register.add_argument("--target", metavar="COLUMN", help="the evaluation set's label column")
    register.add_argument(
        "--promote", action="store_true", help="promote it without an evaluation set"
    )
    register.add_argument(
        "--trust", action="store_true", help="load types in a skops FILE that skops does not trust"
    )
    register.set_defaults(func=cmd_register)


def _model_name(value: str) -> str:
    if not re.fullmatch(MODEL_NAME, value):
        raise argparse.ArgumentTypeError(
            f"{value[:80]!r} is not a model name (lower-case letters, digits, '-', '_')"
        )
    return value


def _fail(message: str) -> int:
    first = str(message).strip().splitlines()[0] if str(message).strip() else "failed"
    sys.stderr.write(f"error: {first}\n")
    return USAGE_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.func is None:  # keygen: needs no settings, so it works before any key exists
        return keygen()
    try:
        settings = get_settings()
        from core.logging import setup_logging
        from core.store import check_storage, open_store
        from training.registry import check_trainers

        check_trainers(settings)
        check_storage(settings)
        setup_logging(settings, "training")
        model = getattr(args, "model", None) or settings.default_model
        if args.func is cmd_train and model not in settings.models:
            return _fail(
                f"model {model!r} has no [models.{model}] table in the settings: nothing says "
                f"how to train it (models: {', '.join(sorted(settings.models))})"
            )
        return args.func(args, settings, open_store(settings, model)) or 0
    except SettingsError as exc:
        return _fail(str(exc.code))
    except SettingsValidationError as exc:
        return _fail(f"invalid settings: {exc}")
    except MLOpsError as exc:
        return _fail(exc.message)
    except MetadataValidationError as exc:
        return _fail(f"corrupt metadata in the model store ({exc.error_count()} errors)")
    except OSError as exc:
        return _fail(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
