"""Evaluation metrics against values computed by hand on a small fixture."""

from __future__ import annotations

import pandas as pd
import pytest

from newspulse.models.sentiment.evaluate import classification_metrics, evaluate_frame
from newspulse.models.sentiment.lexicon import LexiconClassifier

# rows = true, columns = predicted (negative, neutral, positive):
#   negative [1, 1, 0]   neutral [0, 2, 1]   positive [1, 0, 1]
Y_TRUE = ["negative", "negative", "neutral", "neutral", "neutral", "positive", "positive"]
Y_PRED = ["negative", "neutral", "neutral", "neutral", "positive", "positive", "negative"]


def test_metrics_match_hand_computed_values():
    m = classification_metrics(Y_TRUE, Y_PRED)
    assert m["n"] == 7
    assert m["confusion"] == [[1, 1, 0], [0, 2, 1], [1, 0, 1]]
    assert m["accuracy"] == pytest.approx(4 / 7)
    # negative: P = 1/2, R = 1/2; neutral: P = 2/3, R = 2/3; positive: P = 1/2, R = 1/2
    assert m["per_class"]["negative"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert m["per_class"]["neutral"] == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3})
    assert m["per_class"]["positive"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0.5) / 3)  # 5/9
    assert m["weighted_f1"] == pytest.approx((2 * 0.5 + 3 * 2 / 3 + 2 * 0.5) / 7)  # 4/7


def test_metrics_agree_with_scikit_learn():
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    labels = ["negative", "neutral", "positive"]
    m = classification_metrics(Y_TRUE, Y_PRED)
    assert m["accuracy"] == pytest.approx(accuracy_score(Y_TRUE, Y_PRED))
    assert m["macro_f1"] == pytest.approx(f1_score(Y_TRUE, Y_PRED, average="macro"))
    assert m["weighted_f1"] == pytest.approx(f1_score(Y_TRUE, Y_PRED, average="weighted"))
    assert m["confusion"] == confusion_matrix(Y_TRUE, Y_PRED, labels=labels).tolist()


def test_a_class_never_seen_nor_predicted_is_left_out_of_macro_f1():
    m = classification_metrics(["neutral", "positive"], ["neutral", "neutral"])
    # neutral: P = 1/2, R = 1 -> F1 = 2/3; positive: F1 = 0; negative absent on both sides
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0) / 2)
    assert m["per_class"]["negative"]["support"] == 0


def test_evaluate_frame_breaks_down_by_agreement_and_source_beside_the_lexicon():
    df = pd.DataFrame(
        {
            "text": ["Profit rose sharply.", "The company reported a loss.", "Shares were unchanged.", "Sales fell.", "Revenue doubled.", "Results beat estimates."],
            "label": ["positive", "negative", "neutral", "negative", "positive", "positive"],
            "agreement": [100, 100, 75, 75, float("nan"), float("nan")],
            "source": ["phrasebank"] * 4 + ["twitter"] * 2,
        }
    )
    predictions = ["positive", "negative", "neutral", "neutral", "neutral", "positive"]
    result = evaluate_frame(lambda texts: predictions[: len(texts)], df)
    assert result["n"] == 6 and result["accuracy"] == pytest.approx(4 / 6)
    assert result["by_agreement"]["100"] == pytest.approx({"n": 2, "accuracy": 1.0, "macro_f1": 1.0, "weighted_f1": 1.0})
    assert result["by_agreement"]["75"]["accuracy"] == pytest.approx(0.5)
    assert result["by_source"]["twitter"]["accuracy"] == pytest.approx(0.5)
    lex = result["lexicon"]
    assert lex["n"] == 6  # scored on the very same rows
    assert lex["confusion"] == classification_metrics(df["label"].tolist(), LexiconClassifier().predict(df["text"].tolist()))["confusion"]


def test_lexicon_reads_loughran_mcdonald_polarity():
    lex = LexiconClassifier()
    assert lex.predict(["The company reported a loss and impairment.", "Profit improved and the outlook is strong.", "The meeting is on Tuesday."]) == ["negative", "positive", "neutral"]
    proba = lex.predict_proba(["The company reported a loss."])
    assert proba.shape == (1, 3) and proba.sum() == pytest.approx(1.0) and proba[0].argmax() == 0
