"""`resadapt-eval view`: a static HTML report of a results root (see `site`)."""

from resadapt_eval.analysis.view.site import Site, build_site

__all__ = ["Site", "build_site"]
