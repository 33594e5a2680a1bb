"""Ticker and topic tagging of articles: tickers by rules over a bundled company directory,
topics by the learned topic classifier plus analyst-defined keyword topics.

Why rules for tickers: tagging runs on every ingested story (and on every replayed one), so it
must do thousands of articles per second on one core, be explainable to an analyst ("why is this
story under TSLA?") and be fixable by editing a CSV. Precision and recall on a hand-labelled
sample are measured in ``tests/test_ingest_tagging.py`` and reported in ``docs/ingest.md``.

Topics come from the topic classifier (``models/topics/model.py``, trained on Reuters-21578 ModApte,
90 categories, linear on TF-IDF: about 1,000 stories/s per core): every category that passes its
threshold; when none does, the analyst-defined rule topics if any fired, else the model's single
top category. Two categories keep the names the product used before (``earn`` → ``earnings``,
``acq`` → ``mergers_acquisitions``), and stories in a macro-economic category (money-fx, interest,
trade, gnp, ...) also get ``macro``. Keyword rules remain only for the analyst-defined topics the
Reuters categories do not cover (:data:`RULE_TOPICS`: guidance, analyst ratings,
regulation/legal, management, product, credit/bankruptcy).

Tickers come from
- explicit symbols: cashtags (``$AAPL``), exchange-qualified symbols (``NASDAQ:AAPL``,
  ``(NYSE: IBM)``, ``LSE:BARC``), Reuters instrument codes (``AAPL.O``, ``KLM.AS``) and the
  Reuters ``<IBM>`` convention;
- company names and aliases from ``ingest/data/companies.csv`` (``aliases`` always count;
  ``weak_aliases`` are everyday words such as "Target" or "Delta" and count for less);
- bare symbols (``AAPL``) of listed companies, except ones that are also English words.

Names map to the symbol of the story's date, not today's: ``companies.csv``'s ``since`` column is
when a symbol began (a story from before it gets no ticker from that row), and
``ingest/data/alias_history.csv`` gives a name's earlier symbols with their validity dates (a 1987
"Chrysler" is ``C``, not today's ``STLA``; a 1987 "Exxon" is ``XON``). Explicit symbols are
taken as written, and tickers the source gave win: a name the tagger would map to another symbol
than the one the source already named it by adds nothing.

Each mention is weighted by where it is (title > lead > rest of the body) and how sure the form
is; a ticker whose relevance stays below :data:`MIN_RELEVANCE` (a single passing mention deep in
the body) is dropped.
"""

from __future__ import annotations

import bisect
import csv
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from functools import lru_cache
from pathlib import Path

import numpy as np

from newspulse.entities import Passage
from newspulse.models.sentences import sentence_spans
from newspulse.models.topics.model import DEFAULT_TOPIC_MODEL, TopicModel, load_topic_model
from newspulse.schema import Article

COMPANIES_CSV = Path(__file__).with_name("data") / "companies.csv"
ALIAS_HISTORY_CSV = Path(__file__).with_name("data") / "alias_history.csv"

#: Analyst-defined topics, tagged by keyword rules: the topic model has no such category.
RULE_TOPICS: tuple[str, ...] = ("guidance", "analyst_rating", "regulation_legal", "management", "product", "credit_bankruptcy")
#: Product names of topic-model categories that had a name before the model (stored articles,
#: dashboards and alert silences keep working); every other category keeps its Reuters id.
MODEL_TOPIC_NAMES = {"earn": "earnings", "acq": "mergers_acquisitions"}
#: Reuters categories about the economy, currencies and rates: a story in any of them is also ``macro``.
MACRO_CATEGORIES = frozenset({
    "money-fx", "interest", "trade", "money-supply", "gnp", "bop", "cpi", "jobs", "ipi", "retail", "housing",
    "reserves", "dlr", "wpi", "income", "lei", "instal-debt", "yen", "dmk", "stg", "cpu", "nzdlr", "rand", "dfl", "nkr",
})


def model_topic_name(category: str) -> str:
    return MODEL_TOPIC_NAMES.get(category, category)


#: Every topic a story can get: the model's categories (product names), ``macro``, the rule topics.
TOPICS: tuple[str, ...] = (
    *(model_topic_name(c) for c in json.loads((DEFAULT_TOPIC_MODEL / "model_card.json").read_text(encoding="utf-8"))["categories"]),
    "macro",
    *RULE_TOPICS,
)

#: Relevance below which a ticker is dropped (one plain body mention of a name scores 0.38).
MIN_RELEVANCE = 0.45
#: The lead is the body's first sentence (at most this long): where a story names its subject.
LEAD_CHARS = 400
#: Text scanned for tickers; later text is rarely about the story's subject.
MAX_SCAN_CHARS = 20_000
#: Topic rules read the title and this much of the body (later text is rarely about the topic).
TOPIC_BODY_CHARS = 3000

_WHERE_WEIGHT = {"title": 1.0, "lead": 0.7, "body": 0.4}
_FORM_CONFIDENCE = {"explicit": 1.0, "name": 0.95, "caps_name": 0.85, "symbol": 0.7, "weak": 0.5, "comparison": 0.4}
# A company named as the yardstick ("to challenge Nvidia", "rivals such as AMD") is not the subject.
_COMPARISON_WORDS = {
    "rival", "rivals", "competitor", "competitors", "compete", "competes", "competing", "competition",
    "challenge", "challenges", "challenging", "than", "like", "behind", "peer", "peers",
}
_REPEAT_BONUS = 0.1

# Exchange prefixes and the instrument suffix each implies (US venues: none).
_EXCHANGE_SUFFIX = {
    "NASDAQ": "", "NYSE": "", "NYSEARCA": "", "NYSEAMERICAN": "", "NYSE AMERICAN": "", "AMEX": "",
    "OTC": "", "BATS": "", "CBOE": "",
    "LSE": ".L", "LON": ".L", "TSX": ".TO", "TSE": ".T", "TYO": ".T", "ASX": ".AX", "HKEX": ".HK",
    "HKG": ".HK", "ETR": ".DE", "XETRA": ".DE", "FRA": ".F", "EPA": ".PA", "AMS": ".AS", "SWX": ".SW",
    "SIX": ".SW", "BIT": ".MI", "BME": ".MC", "STO": ".ST", "CPH": ".CO", "HEL": ".HE", "OSL": ".OL",
    "KRX": ".KS",
}
# Reuters instrument-code suffixes for US venues map to the bare symbol; others are kept.
_US_RIC_SUFFIXES = {"O", "OQ", "N", "A", "P"}
_RIC_SUFFIXES = _US_RIC_SUFFIXES | {
    "L", "AS", "PA", "DE", "F", "MI", "MC", "T", "HK", "TO", "SW", "ST", "CO", "HE", "OL", "BR", "AX", "KS", "SS", "SZ",
}
_NOT_TICKERS = {"US", "USA", "UK", "UN", "EU", "USD", "CAD", "AUD", "NZD", "HKD", "SGD", "EUR", "GBP", "JPY", "CEO", "CFO", "IPO", "GDP", "CPI", "EPS"}
# Listed symbols that are also words or common acronyms: never matched bare.
_BARE_STOP = {
    "ALL", "NOW", "LOW", "CAT", "KEY", "HAS", "ICE", "ARM", "ING", "SAN", "WELL", "AMT", "DOW", "MET",
    "PSA", "ETN", "TAP", "BUD", "SNOW", "SNAP", "SHOP", "DASH", "PINS", "COIN", "HOOD", "CARR", "OTIS",
    "RIO", "SONY", "VALE", "ELV", "CME", "EOG", "MOS", "NUE", "HES", "AIR", "GIS", "PH", "ON",
}

_EXCHANGES_RE = "|".join(sorted((re.escape(e).replace(r"\ ", r"\s") for e in _EXCHANGE_SUFFIX), key=len, reverse=True))
_EXPLICIT_RE = re.compile(
    r"(?<![\w$])\$(?P<cash>[A-Z]{1,6}(?:\.[A-Z]{1,2})?)\b"
    rf"|\b(?P<exch>{_EXCHANGES_RE})\s?:\s?(?P<xsym>[A-Z0-9]{{1,6}}(?:\.[A-Z]{{1,2}})?)\b"
    r"|<(?P<angle>[A-Z][A-Z0-9]{0,5}(?:\.[A-Z]{1,2})?)>"
    r"|\b(?P<ric>[A-Z][A-Z0-9]{0,5})\.(?P<sfx>[A-Z]{1,2})\b(?!\.\w)"
)
# Words: letters/digits, inner '&', '-', apostrophes; "Apple's" → "Apple".
_WORD_RE = re.compile(r"[A-Za-z0-9\u00c0-\u024f][\w&\u00c0-\u024f]*(?:['’\-][\w&\u00c0-\u024f]+)*")
_POSSESSIVE_RE = re.compile(r"['’]s$")


@dataclass(frozen=True)
class Company:
    symbol: str
    name: str
    sector: str


@dataclass
class TickerMatch:
    """One ticker found in an article, with why (its mentions) and how relevant it is (0..1)."""

    symbol: str
    relevance: float = 0.0
    mentions: list[tuple[str, str, str]] = field(default_factory=list)  # (where, form, text)
    names: set[str] = field(default_factory=set)  # the directory keys of the names that matched


@dataclass
class Tagging:
    tickers: list[TickerMatch]
    topics: list[str]
    topic_scores: dict[str, float]


def _norm_key(text: str) -> str:
    """Normalise a name the way text is tokenised, so 'Procter & Gamble' == 'Procter Gamble'."""
    return " ".join(_POSSESSIVE_RE.sub("", w) for w in _WORD_RE.findall(text))


_CORPORATE_SUFFIXES = {"Inc", "Corp", "Corporation", "Co", "Company", "Companies", "plc", "Ltd", "Limited", "LLC", "SA", "AG", "NV", "SE", "ASA", "A/S", "S", "A", "N", "V"}


def _short_name(name: str) -> str:
    """'Exxon Mobil Corporation' → 'Exxon Mobil'; 'Walt Disney Company' → 'Walt Disney'."""
    words = _norm_key(name).split()
    while len(words) > 1 and words[-1] in _CORPORATE_SUFFIXES:
        words.pop()
    if words and words[0] == "The":
        words = words[1:]
    return " ".join(words)


# Phrases that contain a company name but name something else (an index, a ratings desk that
# is the messenger, not the subject): matched first so their words yield no ticker.
_NOT_COMPANIES = (
    "S&P 500", "S&P Global Ratings", "Standard & Poor's Ratings", "Moody's Investors Service", "Moody's Ratings",
    "Fitch Ratings", "Nasdaq Composite", "Nasdaq 100", "Nasdaq-100", "Dow Jones Industrial Average", "Dow Jones index",
    "Dow Jones industrials", "NYSE Composite", "Russell 2000",
)
_SUFFIX_WORDS = {"Inc", "Corp", "Corporation", "Co", "Company", "plc", "Ltd", "Group", "Holdings", "Airlines"}


#: One dated symbol of a name: ``(valid_from, valid_until, symbol)``; None = open; "" = no listed symbol then.
DatedSymbol = tuple[date | None, date | None, str]


def _day(value: str) -> date | None:
    return date.fromisoformat(value.strip()) if value and value.strip() else None


class CompanyDirectory:
    """Listed companies with their names and aliases, indexed for token n-gram lookup, and the
    dates that decide which symbol a name had on a story's day (:meth:`symbol_on`)."""

    def __init__(
        self,
        companies: Iterable[Company],
        aliases: dict[str, tuple[str, str]],
        *,
        since: dict[str, date] | None = None,
        history: dict[str, list[DatedSymbol]] | None = None,
    ) -> None:
        self.companies = {c.symbol: c for c in companies}
        self.aliases = aliases  # normalised alias → (symbol, form)
        self.since = since or {}  # symbol → first day it stood for its company
        self.history = history or {}  # normalised alias, upper-cased → its earlier (dated) symbols
        self._current = {k.upper(): sym for k, (sym, _form) in aliases.items()}
        # In ALL-CAPS text (wire headlines) only strong names longer than 3 letters count: "UPS
        # PAYOUT" and "GE" in a shouted headline are too often words or other firms' initials.
        self.caps_aliases = {
            k.upper(): (s, "caps_name" if f == "name" else f) for k, (s, f) in aliases.items() if f in ("name", "none") and len(k) > 3
        }
        # First word of each alias → most words any alias starting with it has.
        self.first_words: dict[str, int] = {}
        self.caps_first_words: dict[str, int] = {}
        for index, firsts in ((aliases, self.first_words), (self.caps_aliases, self.caps_first_words)):
            for key in index:
                head, n = key.split(" ", 1)[0], key.count(" ") + 1
                firsts[head] = max(firsts.get(head, 0), n)
        self.bare_symbols = {s for s in self.companies if len(s) >= 3 and s.isalpha() and s not in _BARE_STOP}

    def symbol_on(self, key: str, day: date) -> str | None:
        """The symbol the name ``key`` (a directory key, any case) stood for on ``day``: its dated
        history first, else today's symbol if that had begun by then; None when it had none."""
        upper = key.upper()
        for start, end, symbol in self.history.get(upper, ()):
            if (start is None or start <= day) and (end is None or day < end):
                return symbol or None
        symbol = self._current.get(upper)
        if not symbol or symbol not in self.companies:  # a former name outside its dated range
            return None
        began = self.since.get(symbol)
        return None if began is not None and day < began else symbol

    def listed_on(self, symbol: str, day: date) -> bool:
        """Whether ``symbol`` (bare in the text) stood for its company on ``day``."""
        began = self.since.get(symbol)
        return began is None or day >= began

    def symbols_ever(self, key: str) -> set[str]:
        """Every symbol the name ``key`` has stood for (for "the source's ticker wins")."""
        upper = key.upper()
        return {s for _, _, s in self.history.get(upper, ()) if s} | ({self._current[upper]} if self._current.get(upper) else set())

    @classmethod
    def from_csv(cls, path: Path = COMPANIES_CSV, history_path: Path | None = ALIAS_HISTORY_CSV) -> "CompanyDirectory":
        companies: list[Company] = []
        aliases: dict[str, tuple[str, str]] = {}
        since: dict[str, date] = {}
        with path.open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                sym = row["symbol"].strip()
                companies.append(Company(sym, row["name"].strip(), row.get("sector", "").strip()))
                began = _day(row.get("since") or "")
                if began is not None:
                    since[sym] = began
                weak = {_norm_key(a) for a in row.get("weak_aliases", "").split(";")} - {""}
                strong = [row["name"], _short_name(row["name"])] + row["aliases"].split(";")
                for key in map(_norm_key, strong):
                    if key and key not in weak:  # 'Target Corporation' → 'Target' stays weak
                        aliases.setdefault(key, (sym, "name"))
                for key in weak:
                    aliases.setdefault(key, (sym, "weak"))
        history: dict[str, list[DatedSymbol]] = {}
        if history_path is not None and history_path.exists():
            with history_path.open(newline="", encoding="utf-8") as fh:
                for row in csv.DictReader(fh):
                    key = _norm_key(row["alias"])
                    history.setdefault(key.upper(), []).append((_day(row["valid_from"]), _day(row["valid_until"]), row["symbol"].strip()))
                    if key not in aliases:  # a former name ("Citicorp", "Hughes Tool"): matched like any name
                        aliases[key] = (row["symbol"].strip(), "name")
        for phrase in _NOT_COMPANIES:
            aliases[_norm_key(phrase)] = ("", "none")
        return cls(companies, aliases, since=since, history=history)


_SENTENCE_END_RE = re.compile(r"(?<=[a-z0-9%)\]][.!?])[\"'”’]?\s+(?=[A-Z\"“(])|\n\s*\n?")
_LOWER_RE = re.compile(r"[a-z]")


def lead_end(body: str) -> int:
    """Where the lead ends: after the first sentence, or at :data:`LEAD_CHARS`."""
    m = _SENTENCE_END_RE.search(body, 20, LEAD_CHARS)
    return m.start() if m else min(len(body), LEAD_CHARS)
_UPPER_RE = re.compile(r"[A-Z]")


def _is_caps(text: str) -> bool:
    """True for shouted text (wire headlines): at least 8 letters and under 10% lower-case."""
    head = text[:400]
    upper = len(_UPPER_RE.findall(head))
    lower = len(_LOWER_RE.findall(head))
    return upper + lower >= 8 and lower < 0.1 * (upper + lower)


class Tagger:
    """Fills ``tickers`` and ``topics`` of articles; stateless after construction (thread-safe)."""

    def __init__(self, directory: CompanyDirectory, topic_model: TopicModel, min_relevance: float = MIN_RELEVANCE) -> None:
        self.directory = directory
        self.topic_model = topic_model
        self.min_relevance = min_relevance

    # --- public API -------------------------------------------------------------------------
    def tag(self, article: Article) -> Article:
        """A copy with found tickers merged after any already present, and topics filled."""
        return self.tag_many([article])[0]

    def tag_many(self, articles: Sequence[Article]) -> list[Article]:
        """:meth:`tag` for a batch: the topic model scores every text in one call (about 4x
        cheaper per article than one by one). Articles the crawler already tagged
        (:func:`is_tagged`) come back as they are."""
        todo = [i for i, a in enumerate(articles) if not is_tagged(a)]
        out = list(articles)
        if not todo:
            return out
        texts = [(articles[i].title or "", (articles[i].body or "")[:MAX_SCAN_CHARS]) for i in todo]
        scores = self.topic_model.scores([f"{title}\n{body}" for title, body in texts])
        for i, (title, body), score in zip(todo, texts, scores):
            a = articles[i]
            result = self._analyze(title, body, score, a.published_at.date())
            given = set(a.tickers)
            found = [m.symbol for m in result.tickers if not self._named_otherwise(m, given)]
            tickers = list(dict.fromkeys([*a.tickers, *found]))
            topics = list(dict.fromkeys([*a.topics, *result.topics]))
            out[i] = a.model_copy(update={"tickers": tickers, "topics": topics})
        return out

    def analyze(self, title: str, body: str = "", on: date | None = None) -> Tagging:
        """Tickers (most relevant first, weak ones dropped) and topics of one text, with evidence.
        ``on``: the story's date, which decides the symbol a company's name had (default today)."""
        title, body = title or "", (body or "")[:MAX_SCAN_CHARS]
        return self._analyze(title, body, self.topic_model.scores([f"{title}\n{body}"])[0], on or datetime.now(timezone.utc).date())

    def _named_otherwise(self, match: TickerMatch, given: set[str]) -> bool:
        """The source's tickers win: ``match`` came only from names the source already tagged under
        another of their symbols (a 1987 wire's <C> for "Chrysler"), so it adds nothing."""
        if not given or match.symbol in given or not match.names or any(f in ("explicit", "symbol") for _, f, _ in match.mentions):
            return False
        return all(self.directory.symbols_ever(key) & given for key in match.names)

    def _analyze(self, title: str, body: str, topic_score: np.ndarray, day: date) -> Tagging:
        """:meth:`analyze` given the topic model's scores of ``title`` + ``body``."""
        cut = lead_end(body)
        sections = [(w, t, _words(t)) for w, t in (("title", title), ("lead", body[:cut]), ("body", body[cut:]))]
        found: dict[str, TickerMatch] = {}
        for where, text, words in sections:
            for symbol, form, surface, key in self._mentions(text, words, day):
                match = found.setdefault(symbol, TickerMatch(symbol))
                match.mentions.append((where, form, surface))
                if key:
                    match.names.add(key)
        tickers = []
        for m in found.values():
            if len(m.mentions) == 1 and m.mentions[0][1] == "weak":
                continue  # one everyday word ("Target", "Delta") is not evidence enough
            if all(f == "comparison" for _, f, _ in m.mentions):
                continue  # only ever the yardstick, never the subject
            best = max(_WHERE_WEIGHT[w] * _FORM_CONFIDENCE[f] for w, f, _ in m.mentions)
            m.relevance = round(min(1.0, best + _REPEAT_BONUS * (len(m.mentions) - 1)), 3)
            if m.relevance >= self.min_relevance:
                tickers.append(m)
        tickers.sort(key=lambda m: -m.relevance)
        topic_body = body[cut:TOPIC_BODY_CHARS]
        rule_scores = _score_topics([(w, words if w != "body" else _words(topic_body)) for w, _, words in sections])
        topics, scores = self._topics(topic_score, rule_scores)
        return Tagging(tickers=tickers, topics=topics, topic_scores=scores)

    # --- internals --------------------------------------------------------------------------
    def _topics(self, score: np.ndarray, rule_scores: dict[str, float]) -> tuple[list[str], dict[str, float]]:
        """Model categories that pass their threshold (best first, ``macro`` after them when one is
        macro-economic), then rule topics (strongest first, at most three). When no category
        passes: the rule topics alone if any fired, else the model's top category. Scores: the
        model's (0..1) for its categories, the rule score (1..3) for rule topics."""
        model = self.topic_model
        margin = score - model.thresholds
        passed = [int(j) for j in np.argsort(-margin) if margin[j] >= 0]
        picked = passed or [int(np.argmax(margin))]
        categories = [model.categories[j] for j in picked]
        ruled = [t for t, s in sorted(rule_scores.items(), key=lambda kv: -kv[1]) if s >= _TOPIC_THRESHOLD][:3]
        names = [model_topic_name(c) for c in categories]
        macro = ["macro"] if MACRO_CATEGORIES.intersection(categories) else []
        if not passed and ruled:  # the story has a topic: no need to fall back to a weak category
            return ruled, dict(rule_scores)
        ordered = [*names, *macro, *ruled]
        scores = {**{model_topic_name(model.categories[j]): round(float(score[j]), 4) for j in picked}, **rule_scores}
        return list(dict.fromkeys(ordered)), scores

    def _mentions(self, text: str, words: list[str], day: date) -> Iterable[tuple[str, str, str, str]]:
        """``(symbol, form, surface, name key)`` of every mention; names resolve to the symbol
        they had on ``day``, a bare symbol counts only once it had begun (the key is "" for both
        explicit and bare symbols)."""
        if not text:
            return
        if "$" in text or ":" in text or "<" in text or "." in text:
            for m in _EXPLICIT_RE.finditer(text):
                symbol = _explicit_symbol(m)
                if symbol:
                    yield symbol, "explicit", m.group(0), ""
        caps = _is_caps(text)
        d = self.directory
        if caps:
            index, firsts = d.caps_aliases, d.caps_first_words
            keys = [w.upper() for w in words]
            starts = [i for i, w in enumerate(keys) if w in firsts]
        else:
            index, firsts, keys = d.aliases, d.first_words, words
            starts = [i for i, w in enumerate(words) if w in firsts or w in d.bare_symbols]
        n, covered = len(words), 0
        for i in starts:
            if i < covered:  # inside a longer name already matched
                continue
            for k in range(min(firsts.get(keys[i], 0), n - i), 0, -1):
                key = " ".join(keys[i:i + k])
                entry = index.get(key)
                if entry is not None:
                    form = entry[1]
                    symbol = d.symbol_on(key, day) if form != "none" else None
                    covered = i + k
                    if form == "weak" and covered < n and words[covered] in _SUFFIX_WORDS:
                        form, covered = "name", covered + 1  # "Target Corp" is no everyday word
                    if _after_comparison(words, i):
                        form = "comparison"
                    if symbol:
                        yield symbol, form, " ".join(words[i:covered]), key
                    break
            else:
                if not caps and words[i] in d.bare_symbols and d.listed_on(words[i], day):
                    yield words[i], "comparison" if _after_comparison(words, i) else "symbol", words[i], ""


def _after_comparison(words: list[str], i: int) -> bool:
    before = [w.lower() for w in words[max(0, i - 3):i]]
    return not _COMPARISON_WORDS.isdisjoint(before) or before[-2:] == ["such", "as"]


def _explicit_symbol(m: re.Match[str]) -> str | None:
    if m.group("cash"):
        sym = m.group("cash")
    elif m.group("exch"):
        suffix = _EXCHANGE_SUFFIX.get(" ".join(m.group("exch").split()).upper(), "")
        sym = m.group("xsym")
        if suffix and "." not in sym:
            sym += suffix
    elif m.group("angle"):
        sym = m.group("angle")
    else:
        base, sfx = m.group("ric"), m.group("sfx")
        if sfx not in _RIC_SUFFIXES or f"{base}.{sfx}" in {"U.S", "U.N", "U.K", "E.U"}:
            return None
        sym = base if sfx in _US_RIC_SUFFIXES else f"{base}.{sfx}"
    if sym.split(".")[0] in _NOT_TICKERS:
        return None
    return sym


# --- topics ---------------------------------------------------------------------------------
# Rules are token patterns, matched over the words of a text in one pass (regex alternations were
# 10x slower). Syntax, space-separated slots:
#   ``a|b``      one word, any of the alternatives (lower-case: any case; with a capital: exact)
#   ``acqui*``   a word starting with ``acqui`` (prefixes of at least 4 letters)
#   ``~N``       skip up to N words
#   ``!<N w|v``  veto when one of these words is among the N words before the match
#   ``!>N w|v``  veto when one of these words is among the N words after the match
_TOPIC_THRESHOLD = 1.0
_TOPIC_CAP = 3.0
_SECTION_WEIGHT = {"title": 2.0, "lead": 1.0, "body": 0.5}
_AGENCIES = "moody|fitch|dbrs|s&p|poor|agency"

# Analyst-defined topics (:data:`RULE_TOPICS`); earnings, M&A and macro come from the topic model.
_TOPIC_RULES: dict[str, tuple[str, ...]] = {
    "guidance": (
        "guidance", "outlook", "forecast|forecasts|forecasted !<2 beat|beats|beating|topped|tops|topping|missed|misses|missing|exceeded|exceeding|above|below", "profit warning", "warns|warned",
        "sees|expects|projects|predicts|anticipates ~3 revenue|revenues|earnings|profit|sales|net|growth|results|loss|demand|margin|margins",
        "raises|raised|lifts|lifted|cuts|cut|lowers|lowered|trims|trimmed|reaffirms|reaffirmed|maintains|boosts ~2 forecast|forecasts|outlook|guidance|view|estimates",
        "full-year forecast|outlook|target|targets",
    ),
    "analyst_rating": (
        f"upgrade|upgrades|upgraded|downgrade|downgrades|downgraded !<4 {_AGENCIES} !>5 debt|bond|bonds|credit|notes|junk|{_AGENCIES}",
        "price target|targets", "target price", "initiates|initiated|initiating|starts|begins coverage",
        "overweight|underweight|outperform|underperform|equal-weight", "buy|sell|hold|neutral rating",
        "analyst|analysts at", "brokerage", "reiterates|reiterated|reiterating ~2 buy|sell|hold|rating",
    ),
    "regulation_legal": (
        "SEC", "Securities and Exchange Commission", "FTC", "DOJ", "CFTC", "FCC", "Justice Department", "antitrust",
        "regulator|regulators|regulatory|regulation|regulations", "lawsuit|lawsuits", "sue|sues|sued|suing",
        "settle|settles|settled|settlement", "fined|fines|penalty|penalties", "probe|probes", "investigat*",
        "court|courts", "judge", "ruling", "class-action", "class action", "indict*", "fraud", "European Commission",
        "FDA approves|approved|rejects|rejected|clears|cleared|approval", "sanction|sanctions", "legislation",
        "Congress|Senate", "watchdog", "ban|bans|banned", "subpoena*", "plead|pleads|pleaded guilty",
    ),
    "management": (
        "CEO|chief|CFO|COO|chairman|chairwoman|president|director|executive|head ~6 resign|resigns|resigned|quits|quit|retire|retires|retiring|retired|departs|departure|ousted|ousts|fired|steps|stepped|leaves|leaving",
        "ousts|ousted|oust|replaces|replaced ~2 CEO|chief|CFO|COO|chairman|chairwoman|president",
        "names|named|name|appoints|appointed|appoint|hires|hired|elects|elected|taps|tapped|promotes|promoted ~5 CEO|chief|CFO|COO|chairman|chairwoman|president|director|head|executive",
        "resignation", "step|steps|stepped down", "successor", "succeed|succeeds|succeeded", "management shake-up|shakeup|change|changes",
        "boardroom", "activist investor|investors", "proxy fight|battle|contest",
    ),
    "product": (
        "launch|launches|launched|launching", "unveil|unveils|unveiled|unveiling", "introduces|introduced|introducing ~1 new",
        "new product|products|model|models|chip|chips|drug|service|device|phone|vehicle|program|line|version",
        "recall|recalls|recalled", "rollout", "rolls|roll|rolled out", "FDA approval|approves|approved|clears|cleared",
        "approval for|of ~2 drug|treatment|vaccine|device", "partnership|partners",
        "wins|won|awarded|secures|secured|gets|receives|received|lands|landed ~4 contract|contracts|order|orders",
        "contract award|win", "preorders|pre-orders",
        "clinical|late-stage|mid-stage|early-stage|phase ~1 trial|trials|study|data",
    ),
    "credit_bankruptcy": (
        "bankrupt|bankruptcy|bankruptcies", "Chapter 11|7", "insolvent|insolvency", "default|defaults|defaulted",
        "creditor|creditors", "liquidation|liquidate|liquidated", "Moody|Fitch|DBRS", "Standard Poor",
        "S&P ~2 ratings|rating|downgrade|downgrades|downgraded|lowers|lowered|cuts|cut|affirms|affirmed|upgrades|upgraded",
        "credit|debt rating|ratings", "junk", "downgrade|downgrades|downgraded ~3 debt|bonds|credit|notes",
        "debt|bond|bonds|notes offering|issue|sale", "restructure|restructures|restructured|restructuring ~1 debt",
        "debt restructuring", "missed ~2 payment|payments", "covenant|covenants", "recapitaliz*", "distressed",
        "write-off|writedown|write-down|writeoff",
    ),
}


@dataclass(frozen=True)
class _Slot:
    exact: frozenset[str]  # compared with the word as written
    lower: frozenset[str]  # compared with the lower-cased word
    prefixes: tuple[str, ...]
    skip: int = 0  # > 0: a gap of up to this many words, not a word

    def accepts(self, word: str, low: str) -> bool:
        return word in self.exact or low in self.lower or (bool(self.prefixes) and low.startswith(self.prefixes))


@dataclass(frozen=True)
class _Pattern:
    topic: str
    slots: tuple[_Slot, ...]
    veto_before: tuple[int, frozenset[str]] = (0, frozenset())
    veto_after: tuple[int, frozenset[str]] = (0, frozenset())

    def match_end(self, words: list[str], lows: list[str], start: int) -> int | None:
        return _match(self.slots, 0, words, lows, start)

    def vetoed(self, lows: list[str], start: int, end: int) -> bool:
        nb, before = self.veto_before
        na, after = self.veto_after
        return (nb > 0 and not before.isdisjoint(lows[max(0, start - nb):start])) or (
            na > 0 and not after.isdisjoint(lows[end:end + na])
        )


def _match(slots: tuple[_Slot, ...], k: int, words: list[str], lows: list[str], i: int) -> int | None:
    """End index of ``slots[k:]`` matched from word ``i``, or None (gaps are tried shortest first)."""
    if k == len(slots):
        return i
    slot = slots[k]
    if slot.skip:
        for gap in range(slot.skip + 1):
            end = _match(slots, k + 1, words, lows, i + gap)
            if end is not None:
                return end
        return None
    if i < len(words) and slot.accepts(words[i], lows[i]):
        return _match(slots, k + 1, words, lows, i + 1)
    return None


def _parse_slot(spec: str) -> _Slot:
    if spec.startswith("~"):
        return _Slot(frozenset(), frozenset(), (), skip=int(spec[1:]))
    alts = spec.split("|")
    prefixes = tuple(a[:-1].lower() for a in alts if a.endswith("*"))
    if any(len(p) < 4 for p in prefixes):
        raise ValueError(f"prefix in {spec!r} is shorter than 4 letters")
    words = [a for a in alts if not a.endswith("*")]
    return _Slot(frozenset(a for a in words if a != a.lower()), frozenset(a for a in words if a == a.lower()), prefixes)


def _parse_pattern(topic: str, spec: str) -> _Pattern:
    main, *vetoes = spec.split(" !")
    kw: dict[str, tuple[int, frozenset[str]]] = {}
    for v in vetoes:
        head, words = v.split(" ", 1)
        kw["veto_before" if head[0] == "<" else "veto_after"] = (int(head[1:]), frozenset(words.split("|")))
    return _Pattern(topic, tuple(_parse_slot(s) for s in main.split()), **kw)


class _TopicIndex:
    """Patterns indexed by their first word (or its first four letters, for prefix slots)."""

    def __init__(self, rules: dict[str, tuple[str, ...]]) -> None:
        self.by_exact: dict[str, list[_Pattern]] = {}
        self.by_lower: dict[str, list[_Pattern]] = {}
        self.by_stem: dict[str, list[_Pattern]] = {}
        for topic, specs in rules.items():
            for spec in specs:
                pat = _parse_pattern(topic, spec)
                first = pat.slots[0]
                for w in first.exact:
                    self.by_exact.setdefault(w, []).append(pat)
                for w in first.lower:
                    self.by_lower.setdefault(w, []).append(pat)
                for p in first.prefixes:
                    self.by_stem.setdefault(p[:4], []).append(pat)

    def hits(self, words: list[str]) -> Iterable[str]:
        """The topic of every pattern occurrence in ``words``."""
        lows = [w.lower() for w in words]
        exact, lower, stem = self.by_exact, self.by_lower, self.by_stem
        starts = [i for i, low in enumerate(lows) if low in lower or low[:4] in stem or words[i] in exact]
        for i in starts:
            w, low = words[i], lows[i]
            for pat in (*exact.get(w, ()), *lower.get(low, ()), *stem.get(low[:4], ())):
                end = pat.match_end(words, lows, i)
                if end is not None and not pat.vetoed(lows, i, end):
                    yield pat.topic


_TOPIC_INDEX = _TopicIndex(_TOPIC_RULES)


def topic_scores(title: str, body: str) -> dict[str, float]:
    """Score every rule topic: a hit counts 2 in the title, 1 in the lead, 0.5 later (capped at 3)."""
    cut = lead_end(body)
    sections = (("title", title), ("lead", body[:cut]), ("body", body[cut:TOPIC_BODY_CHARS]))
    return _score_topics([(where, _words(text)) for where, text in sections])


def _score_topics(sections: list[tuple[str, list[str]]]) -> dict[str, float]:
    scores: dict[str, float] = {}
    for where, words in sections:
        weight = _SECTION_WEIGHT[where]
        for topic in _TOPIC_INDEX.hits(words):
            scores[topic] = min(_TOPIC_CAP, scores.get(topic, 0.0) + weight)
    return scores


def _words(text: str) -> list[str]:
    """Words of a text, possessive 's removed ("Apple's" → "Apple")."""
    return [_POSSESSIVE_RE.sub("", w) if "'" in w or "’" in w else w for w in _WORD_RE.findall(text)]


def is_tagged(article: Article) -> bool:
    """Whether the crawler tagged ``article`` already, so the Processor need not tag it again.

    The crawler tags every story before its dedup check, which then sets ``novelty``; and the
    tagger always gives at least one topic (the model's top category when nothing passes). Both
    together are the marker. A replayed row (no novelty), or a producer's article with topics of
    its own but no novelty, is tagged as before: its tickers and topics merged, none lost."""
    return article.novelty is not None and bool(article.topics)


class CompanyMentions:
    """Where an article names each of its tickers: the sentences of :attr:`Article.text` with a
    company's name, aliases (weak ones too: the ticker is already tagged, so "Target" is the
    company here) or symbol in them, with the mentions' character offsets (a
    :class:`newspulse.entities.MentionFinder`, for entity-level verdicts).

    Names match case-sensitively as the company list writes them, with any punctuation between
    their words ("Procter & Gamble"), and in capitals when longer than three letters (wire
    headlines); a symbol matches bare only where the tagger takes it bare, else in an explicit
    form (``$KEY``, ``<KEY>``, ``NYSE:KEY``, ``KEY.N``). Only the first :data:`MAX_SCAN_CHARS`
    characters are read, as for tagging."""

    def __init__(self, directory: CompanyDirectory) -> None:
        self.directory = directory
        self._names: dict[str, list[str]] = {}
        for key, (symbol, _form) in directory.aliases.items():
            if symbol:
                self._names.setdefault(symbol, []).append(key)
        self._patterns: dict[str, tuple[re.Pattern[str], re.Pattern[str] | None]] = {}

    def patterns(self, symbol: str) -> tuple[re.Pattern[str], re.Pattern[str] | None]:
        """Every way the text may name ``symbol``, and the longer names of other companies (or
        indices) that contain one of its names ("GE Vernova" holds GE's "GE"), whose matches
        are not ``symbol``'s, as the tagger's longest match decides (compiled once, cached)."""
        found = self._patterns.get(symbol)
        if found is None:
            own = self._names.get(symbol, [])
            forms: set[str] = set()
            for key in own:
                forms.update(_name_forms(key))
            base = re.escape(symbol.split(".")[0])
            forms.add(re.escape(symbol) if "." in symbol else rf"{base}\.[A-Z]{{1,2}}")
            forms.update((rf"\${base}", rf"<{base}>", rf"(?<=:)\s?{base}"))
            if symbol in self.directory.bare_symbols:
                forms.add(base)
            shadows = {
                form
                for key, (other, _form) in self.directory.aliases.items()
                if other != symbol and any(_contains_words(key, name) for name in own)
                for form in _name_forms(key)
            }
            found = self._patterns[symbol] = (_alternation(forms), _alternation(shadows) if shadows else None)
        return found

    def passages(self, article: Article, tickers: Sequence[str]) -> dict[str, list[Passage]]:
        text = article.text[:MAX_SCAN_CHARS]
        spans = sentence_spans(text)
        starts = [s for s, _ in spans]
        title_end = len(article.title)
        out: dict[str, list[Passage]] = {}
        for ticker in tickers:
            names, shadows = self.patterns(ticker)
            taken = [m.span() for m in shadows.finditer(text)] if shadows is not None else []
            by_sentence: dict[int, list[tuple[int, int]]] = {}
            for m in names.finditer(text):
                if any(s <= m.start() and m.end() <= e for s, e in taken):
                    continue
                k = bisect.bisect_right(starts, m.start()) - 1
                if k >= 0 and m.end() <= spans[k][1]:
                    by_sentence.setdefault(k, []).append((m.start(), m.end()))
            if by_sentence:
                out[ticker] = [Passage(spans[k][0], spans[k][1], tuple(found), title=spans[k][0] < title_end) for k, found in sorted(by_sentence.items())]
        return out


@lru_cache(maxsize=1)
def _default_directory() -> CompanyDirectory:
    return CompanyDirectory.from_csv()


def _name_forms(key: str) -> set[str]:
    """Regex forms of a normalised name: as written, with any punctuation between its words
    ("Procter & Gamble"), and in capitals when longer than three letters (wire headlines)."""
    words = key.split()
    forms = {r"\W{1,5}".join(map(re.escape, words))}
    if len(key) > 3:
        forms.add(r"\W{1,5}".join(re.escape(w.upper()) for w in words))
    return forms


def _contains_words(longer: str, name: str) -> bool:
    """Whether ``longer`` holds the words of ``name`` in a row, and more."""
    outer, inner = longer.split(), name.split()
    return len(outer) > len(inner) and any(outer[i : i + len(inner)] == inner for i in range(len(outer) - len(inner) + 1))


def _alternation(forms: set[str]) -> re.Pattern[str]:
    """One pattern for all ``forms``, longest first, each a whole word."""
    return re.compile(rf"(?<![\w$])(?:{'|'.join(sorted(forms, key=len, reverse=True))})(?![\w&])")


def build_mention_finder() -> CompanyMentions:
    """The pipeline's mention finder over the bundled company list (loaded once per process)."""
    return CompanyMentions(_default_directory())


def build_tagger() -> Tagger:
    """The pipeline's tagger over the bundled company list and topic model (each loaded once per process)."""
    return Tagger(_default_directory(), load_topic_model())
