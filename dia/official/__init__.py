"""The official DIA, CSI and baseline repositories: pinned fetch, verification and import.

Their code is never part of this package: :mod:`dia.official.repos` fetches a repository at its
pinned commit (or takes a local copy) and checks its content digest,
:mod:`dia.official.imports` imports its modules with run-time shims for packages that no longer
install, :mod:`dia.official.contrastive` drives the official DIA and CSI code and
:mod:`dia.official.baselines` that of KDAD, RD4AD, Mean-Shift and UniAD on this pipeline's data
(``impl: official``; the parity tests use them too).
"""
