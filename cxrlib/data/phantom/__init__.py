"""The phantom corpus: SYNTHETIC chest radiographs with known findings and radiology-style reports.

Nothing here is a real patient. The corpus exists so that the whole method runs offline, anywhere, in
seconds, on data that behaves like the real task:

- **Images** — grayscale frontal (PA) radiograph-like images drawn from analytic anatomy: body and soft
  tissue, two lung fields with vascular markings, mediastinum with trachea and aortic knob, heart
  silhouette, diaphragm domes with sharp costophrenic angles, ribs, clavicles and spine. Every patient has
  their own anatomy (size, position, small rotation, cardiothoracic ratio); every study its own exposure,
  contrast, noise and blur. All of these are drawn independently of the label: the ONLY difference between a
  normal and an abnormal image is the rendered findings.
- **Findings** (7) with laterality/location and severity, rendered the way they look on a film:

  =================  ===================================  =============================================
  finding            attributes                           how it is drawn
  =================  ===================================  =============================================
  cardiomegaly       mild / moderate / severe             heart widened (cardiothoracic ratio > 0.5)
  pleural_effusion   right / left / bilateral;            basal opacity with a meniscus rising
                     small / moderate / large             laterally, blunting the costophrenic angle
  pneumothorax       right / left; small / large          lucent apical-lateral rim without lung
                                                          markings, thin visceral pleural line
  nodule             side + zone; small / medium / mass   round (small, subtle) to lobulated (mass)
                                                          soft-tissue opacity
  consolidation      side + lobe; patchy / dense          irregular airspace opacity with air
                                                          bronchograms when dense
  edema              mild / moderate / severe             bilateral perihilar haze, upper-zone
                                                          vessel prominence, Kerley B lines
  atelectasis        right / left / bibasilar;            linear / plate-like basal band
                     minimal / mild / plate-like
  =================  ===================================  =============================================

  Subtle cases (the first severity of each finding, e.g. small nodule, mild cardiomegaly) are common.
- **Reports** — FINDINGS and IMPRESSION from a stochastic grammar: synonyms, varied sentence order,
  explicit negations of absent findings, laterality and severity words that match the image, comparisons
  with the prior study for follow-ups. Normal reports come from a small set of phrasings, so many are
  identical (as in IU X-ray and MIMIC-CXR). A configurable fraction of the studies that have a subtle
  finding get a report that misses it (``report_noise``, a rate among those studies, not among all reports;
  the missed finding is recorded in ``missed_finding``). Such a report treats the finding as absent, as a
  radiologist who overlooked it would, so it may also negate it ("No pulmonary edema."): noise rows are the
  one place where report and labels disagree. The label and tags are the image's ground truth.
- **Structure** — patients with one to several studies; follow-ups where findings progress, persist,
  regress or resolve, and new ones appear; one frontal image per study; normal prevalence configurable
  (default 40 %); a reserved pretraining pool of patients (``split == "pretrain"``) for the demo backbone,
  disjoint from the patients that notebook 01 later splits into train/val/test.

Public entry point: :func:`generate_corpus` (its settings: :class:`cxrlib.config.PhantomConfig`). The
returned manifest follows :mod:`cxrlib.data.manifest` and adds ``finding_<name>`` multi-hot columns,
``finding_detail`` (JSON), ``ctr`` (cardiothoracic ratio), ``study_index``, ``report_noise`` and
``missed_finding``.

Modules (everything public is re-exported here, so ``from cxrlib.data.phantom import ...`` is enough):

- :mod:`~cxrlib.data.phantom.findings` — the findings: names, severities, subtle cases, frequencies,
  report keywords, cardiothoracic ratios;
- :mod:`~cxrlib.data.phantom.anatomy` — :class:`Study` and the sampling of anatomy, acquisition, findings
  and follow-ups (:func:`sample_patient_studies`);
- :mod:`~cxrlib.data.phantom.render` — :class:`PhantomRenderer` and :func:`render_speed`;
- :mod:`~cxrlib.data.phantom.reports` — the report grammar (:func:`write_report`);
- :mod:`~cxrlib.data.phantom.corpus` — :func:`generate_corpus`;
- :mod:`~cxrlib.data.phantom.figures` — :func:`findings_table` and :func:`plot_finding_examples`.
"""

from __future__ import annotations

from cxrlib.data.phantom.anatomy import Study, sample_patient_studies
from cxrlib.data.phantom.corpus import generate_corpus
from cxrlib.data.phantom.figures import findings_table, plot_finding_examples
from cxrlib.data.phantom.findings import FINDING_WEIGHTS, FINDINGS, MENTION_KEYWORDS, SEVERITIES, SUBTLE
from cxrlib.data.phantom.render import PhantomRenderer, render_speed
from cxrlib.data.phantom.reports import write_report

__all__ = [
    "FINDINGS",
    "SEVERITIES",
    "SUBTLE",
    "FINDING_WEIGHTS",
    "MENTION_KEYWORDS",
    "PhantomRenderer",
    "Study",
    "sample_patient_studies",
    "write_report",
    "generate_corpus",
    "findings_table",
    "plot_finding_examples",
    "render_speed",
]
