"""The runtimes ``llmstd check`` can run a side in, by name: one definition for the checker
(:mod:`llmstd.checking.runtimes`, which runs them) and the CLI's help, which spells them without
importing the checker and its numerical stack."""

RUNTIMES = ("auto", "transformers", "llmstd-torch", "transformers-tf", "llmstd-tf", "onnxruntime", "keras-hub")
