"""Ticker and topic tagging of articles, by rules over a bundled company directory.

Why rules and not a model: tagging runs on every ingested story (and on every replayed one), so it
must do thousands of articles per second on one core, be explainable to an analyst ("why is this
story under TSLA?") and be fixable by editing a CSV. Precision and recall on a hand-labelled
sample are measured in ``tests/test_ingest_tagging.py`` and reported in ``docs/ingest.md``.

Tickers come from
- explicit symbols: cashtags (``$AAPL``), exchange-qualified symbols (``NASDAQ:AAPL``,
  ``(NYSE: IBM)``, ``LSE:BARC``), Reuters instrument codes (``AAPL.O``, ``KLM.AS``) and the
  Reuters ``<IBM>`` convention;
- company names and aliases from ``ingest/data/companies.csv`` (``aliases`` always count;
  ``weak_aliases`` are everyday words such as "Target" or "Delta" and count for less);
- bare symbols (``AAPL``) of listed companies, except ones that are also English words.

Each mention is weighted by where it is (title > lead > rest of the body) and how sure the form
is; a ticker whose relevance stays below :data:`MIN_RELEVANCE` (a single passing mention deep in
the body) is dropped.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from newspulse.schema import Article

COMPANIES_CSV = Path(__file__).with_name("data") / "companies.csv"

#: Topic ids, in display order; ``other`` is given when no rule fires.
TOPICS: tuple[str, ...] = (
    "earnings",
    "guidance",
    "mergers_acquisitions",
    "analyst_rating",
    "regulation_legal",
    "macro",
    "management",
    "product",
    "credit_bankruptcy",
    "other",
)

#: Relevance below which a ticker is dropped (one plain body mention of a name scores 0.38).
MIN_RELEVANCE = 0.45
#: The lead is the first part of the body: where a story names its subject.
LEAD_CHARS = 400
#: Topic rules read the title and this much of the body (later text is rarely about the topic).
TOPIC_BODY_CHARS = 3000

_WHERE_WEIGHT = {"title": 1.0, "lead": 0.7, "body": 0.4}
_FORM_CONFIDENCE = {"explicit": 1.0, "name": 0.95, "caps_name": 0.85, "symbol": 0.7, "weak": 0.5}
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


class CompanyDirectory:
    """Listed companies with their names and aliases, indexed for token n-gram lookup."""

    def __init__(self, companies: Iterable[Company], aliases: dict[str, tuple[str, str]]) -> None:
        self.companies = {c.symbol: c for c in companies}
        self.aliases = aliases  # normalised alias → (symbol, form)
        self.caps_aliases = {k.upper(): (s, "caps_name") for k, (s, f) in aliases.items() if f == "name"}
        self.max_words = max((k.count(" ") + 1 for k in aliases), default=1)
        self.bare_symbols = {s for s in self.companies if len(s) >= 3 and s.isalpha() and s not in _BARE_STOP}

    @classmethod
    def from_csv(cls, path: Path = COMPANIES_CSV) -> "CompanyDirectory":
        companies: list[Company] = []
        aliases: dict[str, tuple[str, str]] = {}
        with path.open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                sym = row["symbol"].strip()
                companies.append(Company(sym, row["name"].strip(), row.get("sector", "").strip()))
                weak = {_norm_key(a) for a in row.get("weak_aliases", "").split(";")} - {""}
                strong = [row["name"], _short_name(row["name"])] + row["aliases"].split(";")
                for key in map(_norm_key, strong):
                    if key and key not in weak:  # 'Target Corporation' → 'Target' stays weak
                        aliases.setdefault(key, (sym, "name"))
                for key in weak:
                    aliases.setdefault(key, (sym, "weak"))
        return cls(companies, aliases)


def _is_caps(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    return len(letters) >= 8 and sum(c.isupper() for c in letters) / len(letters) > 0.8


class Tagger:
    """Fills ``tickers`` and ``topics`` of articles; stateless after construction (thread-safe)."""

    def __init__(self, directory: CompanyDirectory, min_relevance: float = MIN_RELEVANCE) -> None:
        self.directory = directory
        self.min_relevance = min_relevance

    # --- public API -------------------------------------------------------------------------
    def tag(self, article: Article) -> Article:
        """A copy with found tickers merged after any already present, and topics filled."""
        result = self.analyze(article.title, article.body)
        tickers = list(dict.fromkeys([*article.tickers, *(m.symbol for m in result.tickers)]))
        topics = list(dict.fromkeys([*article.topics, *result.topics]))
        if len(topics) > 1 and "other" in topics:
            topics.remove("other")
        return article.model_copy(update={"tickers": tickers, "topics": topics})

    def analyze(self, title: str, body: str = "") -> Tagging:
        """Tickers (most relevant first, weak ones dropped) and topics of one text, with evidence."""
        sections = (("title", title or ""), ("lead", (body or "")[:LEAD_CHARS]), ("body", (body or "")[LEAD_CHARS:]))
        found: dict[str, TickerMatch] = {}
        for where, text in sections:
            if text:
                for symbol, form, surface in self._mentions(text):
                    found.setdefault(symbol, TickerMatch(symbol)).mentions.append((where, form, surface))
        tickers = []
        for m in found.values():
            best = max(_WHERE_WEIGHT[w] * _FORM_CONFIDENCE[f] for w, f, _ in m.mentions)
            m.relevance = round(min(1.0, best + _REPEAT_BONUS * (len(m.mentions) - 1)), 3)
            if m.relevance >= self.min_relevance:
                tickers.append(m)
        tickers.sort(key=lambda m: -m.relevance)
        scores = topic_scores(title or "", (body or "")[:TOPIC_BODY_CHARS])
        topics = [t for t, s in sorted(scores.items(), key=lambda kv: -kv[1]) if s >= _TOPIC_THRESHOLD][:3]
        return Tagging(tickers=tickers, topics=topics or ["other"], topic_scores=scores)

    # --- internals --------------------------------------------------------------------------
    def _mentions(self, text: str) -> Iterable[tuple[str, str, str]]:
        for m in _EXPLICIT_RE.finditer(text):
            symbol = _explicit_symbol(m)
            if symbol:
                yield symbol, "explicit", m.group(0)
        caps = _is_caps(text)
        d = self.directory
        words = [(w.start(), _POSSESSIVE_RE.sub("", w.group(0))) for w in _WORD_RE.finditer(text)]
        i, n = 0, len(words)
        while i < n:
            first = words[i][1]
            if not (first[0].isupper() or first[0].isdigit()):
                i += 1
                continue
            hit = None
            for k in range(min(d.max_words, n - i), 0, -1):
                key = " ".join(w for _, w in words[i:i + k])
                entry = d.caps_aliases.get(key.upper()) if caps else d.aliases.get(key)
                if entry is not None:
                    hit = (entry, k, key)
                    break
            if hit is not None:
                (symbol, form), k, key = hit
                yield symbol, form, key
                i += k
                continue
            if not caps and first in d.bare_symbols:
                yield first, "symbol", first
            i += 1


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
_TOPIC_THRESHOLD = 1.0
_TOPIC_WEIGHT = {"title": 2.0, "body": 0.5}
_LEAD_WEIGHT = 1.0

_RATING_AGENCY = r"(?:Moody'?s|Fitch|S&P|Standard\s*&\s*Poor'?s|DBRS)"

_TOPIC_RULES: dict[str, str] = {
    "earnings": r"""
        \bearnings\b(?!\s+(?:guidance|outlook|forecast))|\bquarterly\s+(?:results|profit|loss|revenue|sales)
        |\b(?:first|second|third|fourth|1st|2nd|3rd|4th)[-\s](?:quarter|qtr)\b|\bQ[1-4]\b|\bqtr\b
        |\bnet\s+(?:income|profit|loss|earnings)\b|\bEPS\b|\bper\s+share\b|\bshr\b
        |\b(?:profit|revenue|sales|income)\s+(?:rose|fell|jumped|slumped|surged|dropped|declined|climbed|tumbled|rises|falls|jumps)
        |\b(?:beat|beats|missed|misses|tops|topped)\s+(?:\w+\s+)?(?:estimates|expectations|forecasts)
        |\b(?:year|yr)\s+net\b|\bresults\b|\bposts?\s+(?:a\s+)?(?:loss|profit)|\breport(?:s|ed)?\s+(?:a\s+)?(?:loss|profit)
        |\boper(?:ating)?\s+(?:profit|loss|income)\b""",
    "guidance": r"""
        \bguidance\b|\boutlook\b|\bforecasts?\b|\bforecast(?:ed|ing)\b|\bprofit\s+warning\b|\bwarns?\b
        |\b(?:sees|expects|projects)\s+(?:\w+\s+){0,3}(?:revenue|earnings|profit|sales|net|growth|results|loss)
        |\b(?:raises?|raised|lifts?|lifted|cuts?|lowers?|lowered|trims?|reaffirm(?:s|ed)?|maintains?)\s+(?:its\s+|full-year\s+|annual\s+)*(?:forecast|outlook|guidance|target)
        |\bfull-year\s+(?:forecast|outlook|target)|\bsees\s+(?:\w+\s+)?(?:qtr|quarter|year)""",
    "mergers_acquisitions": r"""
        \bmerg(?:er|ers|e|es|ed|ing)\b|\bacqui(?:re|res|red|ring|sition|sitions)\b|\btakeover\b|\bbuyout\b
        |\bbid\s+for\b|\bto\s+buy\b|\bbuys\b|\bstake\b|\btender\s+offer\b|\bdeal\s+to\s+(?:buy|acquire|sell)
        |\bagree[sd]?\s+to\s+(?:buy|sell|acquire)\b|\bdivest(?:s|ed|iture|ment)?\b|\bspin[-\s]?off\b
        |\bsells?\s+(?:its\s+)?(?:\w+\s+){0,2}(?:unit|division|business|stake|subsidiary)|\bsale\s+of\s+(?:its\s+)?(?:\w+\s+){0,2}(?:unit|division|business|subsidiary)
        |\bcompletes?\s+sale\b|\bleveraged\s+buyout\b|\bLBO\b|\bhostile\s+bid\b|\bdeal\s+(?:valued|worth)\b""",
    "analyst_rating": rf"""
        \b(?:upgrade[sd]?|downgrade[sd]?)\b(?!\s+(?:\w+\s+){{0,3}}(?:debt|bonds?|credit|notes|to\s+junk))(?!.*{_RATING_AGENCY})
        |\bprice\s+target\b|\btarget\s+price\b|\binitiat(?:es|ed|ing)\s+coverage\b|\boverweight\b|\bunderweight\b
        |\boutperform\b|\bunderperform\b|\b(?:buy|sell|hold|neutral)\s+rating\b|\bequal[-\s]weight\b|\banalysts?\s+at\b|\bbrokerage\b""",
    "regulation_legal": r"""
        \bSEC\b|\bSecurities\s+and\s+Exchange\s+Commission\b|\bFTC\b|\bDOJ\b|\bJustice\s+Department\b|\bantitrust\b
        |\bregulators?\b|\bregulatory\b|\blawsuits?\b|\bsu(?:es|ed|ing)\b|\bsettle(?:ment|s|d)?\b|\bfined?\b|\bfines\b|\bpenalty\b
        |\bprobe\b|\binvestigat(?:ion|ing|es)\b|\bcourt\b|\bjudge\b|\bruling\b|\bclass[-\s]action\b|\bindict(?:ed|ment)\b
        |\bfraud\b|\bEuropean\s+Commission\b|\bCFTC\b|\bFCC\b|\bFDA\s+(?:approv|reject|clear)|\bsanctions?\b|\blegislation\b
        |\bcongress\b|\bsenate\b|\bappeals?\s+court\b|\bpatent\s+(?:infringement|lawsuit)|\bcompetition\s+(?:authority|watchdog)\b|\bwatchdog\b""",
    "macro": r"""
        \binflation\b|\bCPI\b|\bconsumer\s+prices\b|\binterest\s+rates?\b|\brate\s+(?:hike|hikes|cut|cuts|increase|decision)\b
        |\bFederal\s+Reserve\b|\bthe\s+Fed\b|\bFed\s+(?:chair|officials?|policy|funds)\b|\bcentral\s+bank\b|\bECB\b|\bBank\s+of\s+(?:England|Japan|Canada)\b
        |\bGDP\b|\bgross\s+(?:domestic|national)\s+product\b|\bunemployment\b|\bjobless\b|\bpayrolls\b|\brecession\b|\beconom(?:y|ic\s+growth)\b
        |\btrade\s+(?:deficit|surplus|balance|war)\b|\bmoney\s+supply\b|\btreasury\s+yields?\b|\bbond\s+yields?\b|\bOPEC\b|\btariffs?\b
        |\bbudget\s+deficit\b|\bcurrent\s+account\b|\bexchange\s+rates?\b|\bhousing\s+starts\b|\bretail\s+sales\b|\bindustrial\s+production\b
        |\bPMI\b|\bdiscount\s+rate\b|\bprime\s+rate\b|\bmonetary\s+policy\b|\bfiscal\b|\bcrude\s+(?:oil\s+)?prices?\b|\boil\s+prices?\b""",
    "management": r"""
        \b(?:CEO|chief\s+(?:executive|financial|operating)(?:\s+officer)?|CFO|COO|chairman|chairwoman|chair|president|director|executive)\b
            (?:\s+\w+){0,6}?\s+(?:resign(?:s|ed)?|steps?\s+down|stepped\s+down|retir(?:es|ed|ing)|depart(?:s|ed|ure)|ousted|fired|quits?)\b
        |\b(?:names?|named|appoints?|appointed|hires?|hired|elects?|elected|taps?|tapped)\s+(?:\w+\s+){0,5}?(?:as\s+)?(?:new\s+)?(?:CEO|chief|CFO|COO|chairman|president|director|head)\b
        |\bresign(?:s|ed|ation)\b|\bsteps?\s+down\b|\bsuccessor\b|\bsucceed(?:s|ed)?\b|\bmanagement\s+(?:shake-?up|change)s?\b|\bboardroom\b
        |\bactivist\s+investor\b|\bproxy\s+(?:fight|battle)\b""",
    "product": r"""
        \blaunch(?:es|ed|ing)?\b|\bunveil(?:s|ed|ing)?\b|\bintroduc(?:es|ed|ing)\s+(?:a\s+|its\s+)?new\b|\bnew\s+(?:product|model|chip|drug|service|device|phone|vehicle)s?\b
        |\brecalls?\b|\brecalled\b|\brollout\b|\brolls?\s+out\b|\bFDA\s+approv|\bapproval\s+(?:for|of)\s+(?:its\s+)?(?:drug|treatment|vaccine|device)
        |\b(?:wins?|won|awarded|secures?|secured)\s+(?:a\s+)?(?:\$?[\d.,]+\s*(?:mln|million|billion|bln)?\s+)?(?:\w+\s+){0,2}contract\b|\bcontract\s+(?:award|win)\b
        |\bpartnership\b|\bships?\s+(?:its\s+)?(?:first|new)\b|\bpreorders?\b|\bsubscribers\b|\bdeliveries\b""",
    "credit_bankruptcy": rf"""
        \bbankrupt(?:cy|cies)?\b|\bChapter\s+(?:7|11)\b|\binsolven(?:t|cy)\b|\bdefault(?:s|ed)?\b|\bcreditors?\b|\bliquidat(?:ion|e|ed)\b
        |{_RATING_AGENCY}\b|\bcredit\s+rating\b|\bdebt\s+rating\b|\bjunk\b|\bdowngrade[sd]?\s+(?:\w+\s+){{0,3}}(?:debt|bonds?|credit|notes)
        |\b(?:debt|bond|notes)\s+(?:offering|issue|sale)\b|\brestructur(?:e|es|ed|ing)\s+(?:its\s+)?debt\b|\bdebt\s+restructuring\b
        |\bmissed\s+(?:a\s+)?(?:debt\s+|interest\s+|bond\s+)?payment\b|\bcovenants?\b|\brecapitaliz|\bdistressed\b|\bwrite[-\s]?off\b""",
}
_TOPIC_RES = {topic: re.compile(pattern, re.VERBOSE | re.IGNORECASE) for topic, pattern in _TOPIC_RULES.items()}
# Acronym rules must match case-sensitively (the 'sec' in 'second' is no regulator).
# A hit right after these words belongs to another topic: "Moody's downgrades X" is a credit
# rating, not an equity analyst's; "upgrades X to buy" is a rating, not an acquisition.
_VETO_BEFORE = {
    "analyst_rating": re.compile(rf"{_RATING_AGENCY}\W+(?:\w+\W+){{0,2}}$", re.IGNORECASE),
    "mergers_acquisitions": re.compile(r"\b(?:upgrade[sd]?|rate[sd]?|raised?|lifts?|moves?)\s+(?:[\w.'-]+\s+){0,3}$", re.IGNORECASE),
}
_CASE_SENSITIVE_TOKENS = re.compile(r"\b(?:SEC|FTC|DOJ|CFTC|FCC|GDP|CPI|PMI|ECB|OPEC|EPS|LBO|CEO|CFO|COO|Q[1-4])\b")


def topic_scores(title: str, body: str) -> dict[str, float]:
    """Score every topic: a rule hit counts 2 in the title, 1 in the lead, 0.5 later (capped at 3)."""
    parts = (("title", title, _TOPIC_WEIGHT["title"]), ("lead", body[:LEAD_CHARS], _LEAD_WEIGHT), ("body", body[LEAD_CHARS:], _TOPIC_WEIGHT["body"]))
    scores: dict[str, float] = {}
    for topic, rx in _TOPIC_RES.items():
        total = 0.0
        for _, text, weight in parts:
            if not text:
                continue
            for m in rx.finditer(text):
                token = m.group(0).strip()
                if _CASE_SENSITIVE_TOKENS.fullmatch(token.upper()) and not _CASE_SENSITIVE_TOKENS.fullmatch(token):
                    continue
                veto = _VETO_BEFORE.get(topic)
                if veto is not None and veto.search(text, max(0, m.start() - 40), m.start()):
                    continue
                total += weight
                if total >= 3.0:
                    break
        if total:
            scores[topic] = min(total, 3.0)
    return scores


@lru_cache(maxsize=1)
def _default_directory() -> CompanyDirectory:
    return CompanyDirectory.from_csv()


def build_tagger() -> Tagger:
    """The pipeline's tagger over the bundled company list (loaded once per process)."""
    return Tagger(_default_directory())
