"""``python -m hired.lmms ...``: lmms-eval's command line with the ``hired_llava`` model registered."""

from __future__ import annotations


def main() -> None:
    try:
        import lmms_eval.models as registry
        from lmms_eval.__main__ import cli_evaluate
    except ImportError as error:
        raise SystemExit(
            f"error: lmms-eval is not importable ({error}); install it with: pip install 'hired[lmms]'"
        ) from None
    from hired.lmms.models.hired_llava import HiREDLlava

    available = getattr(registry, "AVAILABLE_MODELS", None)
    if isinstance(available, dict):
        available["hired_llava"] = f"{HiREDLlava.__module__}.{HiREDLlava.__name__}"
    try:
        from lmms_eval.api.registry import register_model

        register_model("hired_llava")(HiREDLlava)
    except (ImportError, ValueError, AssertionError):  # older/newer registries
        pass
    cli_evaluate()


if __name__ == "__main__":
    main()
