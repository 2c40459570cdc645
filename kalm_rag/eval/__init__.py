"""Evaluation on local data: task folders (BEIR retrieval, bitext, STS), metrics and scoring.

Submodules, imported on use (mteb, pytrec_eval and scipy load only there):

- ``kalm_rag.eval.datasets``: read task folders into plain dataclasses (no heavy imports).
- ``kalm_rag.eval.metrics``: nDCG/Recall/MRR and bitext accuracy (trec_eval), Spearman (scipy).
- ``kalm_rag.eval.scoring``: dense (any Encoder), BM25 and TF-IDF scores for those tasks.
- ``kalm_rag.eval.mteb_tasks``: the same folders as mteb tasks for ``mteb.evaluate``.
"""
