"""Task types, default instructions and the query templates of instruction-aware models.

KaLM puts the instruction on the query side only for asymmetric tasks (retrieval, reranking)
and on both sides for symmetric ones (STS, pair classification, bitext); see RECIPE.md.
"""

from __future__ import annotations

from enum import StrEnum

from kalm_rag.errors import ConfigError


class TaskType(StrEnum):
    RETRIEVAL = "retrieval"
    RERANKING = "reranking"
    STS = "sts"
    PAIR_CLASSIFICATION = "pair_classification"
    BITEXT = "bitext"
    CLASSIFICATION = "classification"
    CLUSTERING = "clustering"
    SUMMARIZATION = "summarization"


#: Tasks where documents are plain and only queries carry the instruction.
ASYMMETRIC_TASKS = frozenset({TaskType.RETRIEVAL, TaskType.RERANKING})

DEFAULT_INSTRUCTIONS: dict[TaskType, str] = {
    TaskType.RETRIEVAL: "Given a query, retrieve documents that answer the query",
    TaskType.RERANKING: "Given a query, rerank the documents by how well they answer the query",
    TaskType.STS: "Retrieve semantically similar text",
    TaskType.PAIR_CLASSIFICATION: "Retrieve semantically similar text",
    TaskType.BITEXT: "Retrieve parallel sentences",
    TaskType.CLASSIFICATION: "Classify the topic of the given text",
    TaskType.CLUSTERING: "Identify the topic or theme of the given text",
    TaskType.SUMMARIZATION: "Retrieve semantically similar summaries",
}

#: KaLM v2 query template (note the spaces around the newline).
KALM_TEMPLATE = "Instruct: {instruction} \n Query: "


def parse_task(task: str | TaskType) -> TaskType:
    try:
        return TaskType(task)
    except ValueError:
        known = ", ".join(t.value for t in TaskType)
        raise ConfigError(f"unknown task type {task!r}; known task types: {known}") from None


def is_symmetric(task: str | TaskType) -> bool:
    return parse_task(task) not in ASYMMETRIC_TASKS


def render_prefix(template: str, instruction: str) -> str:
    """Fill an instruction template such as ``KALM_TEMPLATE``; the text is appended after it."""
    if "{instruction}" not in template:
        raise ConfigError(f"instruction template {template!r} has no '{{instruction}}' placeholder")
    return template.replace("{instruction}", instruction)
