"""Reports: per spec the paper's tables beside ours, PNG figures and a static HTML page
(:mod:`.reproduction`), and the audit report of one model (:mod:`.audit`)."""

from bnnrobust.report.audit import write as write_audit
from bnnrobust.report.plots import Figure
from bnnrobust.report.reproduction import SpecReport, report

__all__ = ["Figure", "SpecReport", "report", "write_audit"]
