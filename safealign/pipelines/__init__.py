"""Pipelines: jobs that compose the layers below (data, models, train, eval, diagnostics, report).

One module per job, readable top to bottom: :mod:`~safealign.pipelines.demo` (the end-to-end demo),
:mod:`~safealign.pipelines.build_safety` (self-generated safety pairs),
:mod:`~safealign.pipelines.diagnose` (the ``safealign diagnose`` runners) and
:mod:`~safealign.pipelines.paired_margin` (paired refusal-margin comparison of two models). The CLI only
parses arguments and calls one of these; everything here is callable from Python.
"""
