"""Render the report page: ``templates/report.html.j2`` (Jinja2, autoescaped) filled with the sections as data.

The layout lives in the template only; Python hands it the title, the meta line,
the sections ``[{"id", "title", "blocks"}]`` and the MLflow UI address. Values are
escaped by Jinja2 unless they are :class:`markupsafe.Markup` (sentences and links
built with escaped values).
"""

from __future__ import annotations

from functools import lru_cache

__all__ = ["render", "TEMPLATE"]

#: The page template, shipped as package data of ``nnexp.report``.
TEMPLATE = "report.html.j2"


@lru_cache(maxsize=1)
def _environment():
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("nnexp.report", "templates"),
                              autoescape=True)


def render(*, title: str, meta, meta_blocks: list[dict], sections: list[tuple[str, list[dict]]], built: str,
           ui_url: str) -> str:
    """The page's HTML.

    Parameters
    ----------
    sections : list of (title, blocks)
        Blocks are dicts with a ``kind`` (``p``, ``note``, ``warn``, ``list``, ``table``, ``code``, ``figure``,
        ``details``, ``ui_box``) and the fields the template reads for it.
    """
    data = [{"id": f"s{i}", "title": t, "blocks": blocks} for i, (t, blocks) in enumerate(sections)]
    return _environment().get_template(TEMPLATE).render(title=title, meta=meta, meta_blocks=meta_blocks,
                                                        sections=data, built=built, ui_url=ui_url)
