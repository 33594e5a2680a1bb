"""Behavioural tests of the trained classifier (Made-With-ML style): what an analyst expects
of *any* sentiment model, independent of its headline accuracy.

- Invariance: swapping the company or ticker must not change the verdict.
- Direction: "beats estimates" must score above "misses estimates" for the same company.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow

COMPANIES = ["Nokia", "Apple", "Siemens", "Tesla", "$AAPL", "Fortum Oyj", "HSBC"]
INVARIANCE_TEMPLATES = [
    "{} reported a net loss and cut its full-year guidance.",
    "{} raised its dividend after record quarterly profit.",
    "{} will hold its annual general meeting in Helsinki on Thursday.",
    "Shares of {} fell sharply after the profit warning.",
    "{} operating profit rose to EUR 32 mn from EUR 21 mn.",
]
DIRECTION_PAIRS = [
    ("{} beats estimates for second-quarter earnings", "{} misses estimates for second-quarter earnings"),
    ("{} operating profit increased by 40 %", "{} operating profit decreased by 40 %"),
    ("{} raises full-year outlook", "{} cuts full-year outlook"),
    ("{} shares surge after strong sales", "{} shares plunge after weak sales"),
]


@pytest.fixture(scope="module")
def clf(trained_classifier_registry):
    from newspulse.models.sentiment.predict import SentimentModel
    from newspulse.models.sentiment.registry import Registry

    reg = Registry(trained_classifier_registry)
    return SentimentModel.from_dir(reg.production_dir(), device="cpu", quantize="off")


def test_swapping_the_company_keeps_the_label(clf):
    for template in INVARIANCE_TEMPLATES:
        labels = clf.predict([template.format(c) for c in COMPANIES])
        assert len(set(labels)) == 1, f"{template!r}: {dict(zip(COMPANIES, labels))}"


def test_swapping_the_company_barely_moves_the_score(clf):
    for template in INVARIANCE_TEMPLATES:
        p = clf.predict_proba([template.format(c) for c in COMPANIES])
        score = p[:, 2] - p[:, 0]
        assert score.max() - score.min() < 0.35, f"{template!r}: scores {score.round(3).tolist()}"


def test_good_news_scores_above_bad_news(clf):
    for good, bad in DIRECTION_PAIRS:
        for company in ("Nokia", "$TSLA"):
            p = clf.predict_proba([good.format(company), bad.format(company)])
            score = p[:, 2] - p[:, 0]
            assert score[0] > score[1] + 0.2, f"{good!r} vs {bad!r} for {company}: {score.round(3).tolist()}"


def test_clear_cases_get_the_expected_label(clf):
    assert clf.predict(["Nokia beats estimates and raises guidance", "Nokia misses estimates and cuts guidance"]) == ["positive", "negative"]
