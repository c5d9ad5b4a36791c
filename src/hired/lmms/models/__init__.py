"""lmms-eval plugin entry: ``LMMS_EVAL_PLUGINS=hired.lmms`` makes ``--model hired_llava`` available."""

AVAILABLE_MODELS = {"hired_llava": "HiREDLlava"}
