"""Another patient's report text made safe to offer for this study: its identifiers found, its numbers blanked, its
length capped, and what it claims (LGE, extent, MVO, wall, LV/RV function and size, hypertrophy) read from its
words and held against what the node measured in this study.

Pure functions over strings and summary blocks; no model, no I/O.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from dicomnode.analysis.aha import TERRITORIES, transmurality_class
from dicomnode.analysis.cine_metrics import NORMAL_RANGE_SD, NORMAL_VALUES
from dicomnode.analysis.reference_age import ADULT_RANGES_NOT_APPLIED

# ----------------------------------------------------------------------------------------------------------------
# Identifiers: a report holding one is withheld from the bank (report_bank.read_bank_file), never offered
# ----------------------------------------------------------------------------------------------------------------

_IDENTIFIER_PATTERNS: tuple[tuple[str, re.Pattern], ...] = (
    ("a name after 'Patient:' / 'Name:'", re.compile(
        r"\b(?:patient(?:\s*name)?|name|pt|patientin|patientenname|nom|naam)\s*:\s*[A-Za-zÀ-ÿ^]", re.IGNORECASE)),
    ("a DICOM-style person name (FAMILY^GIVEN)", re.compile(r"(?<=[A-Za-zÀ-ÿ'-][A-Za-zÀ-ÿ'-])\^(?=[A-Za-zÀ-ÿ'-])")),
    ("a medical record number / patient ID", re.compile(
        r"\b(?:MRN|PID|patient\s*ID|Pat(?:ienten)?[.-]?\s*(?:Nr|ID)\.?|ID|accession(?:\s*(?:no|number))?)\b"
        r"\s*[:#.]?\s*(?:no\.?\s*)?[\w-]{0,20}\d", re.IGNORECASE)),
    ("a date of birth", re.compile(r"\b(?:DOB|D\.O\.B\.|date\s+of\s+birth|birth\s*date|born|geb\.|geboren)\b",
                                   re.IGNORECASE)),
    ("a physician's name or signature", re.compile(
        r"\b(?:Dr|Prof|Doctor|Drs)\.?\s+[A-Z][A-Za-zÀ-ÿ'-]+|(?i:\b(?:signed|reported|dictated|verified|written|"
        r"authori[sz]ed|approved)\s+by\b)")),
    ("a person's name after a title (Mr, Mrs, Ms, Miss, Herr, Frau, Mme, M.)", re.compile(
        r"\b(?:Mr|Mrs|Ms|Miss|Mme|Herr|Frau)\b\.?\s+[A-ZÀ-Þ][A-Za-zÀ-ÿ'-]+|\bM\.\s+[A-ZÀ-Þ][a-zà-ÿ'-]+")),
)

#: a date: day and month in either order (one of them 12 or less, the other 31 or less), a 2- or 4-digit year; or ISO
_DATE = re.compile(r"\b(\d{1,2})[./-](\d{1,2})[./-](\d{4}|\d{2})\b|\b((?:19|20)\d{2})-(\d{2})-(\d{2})\b")
#: "segments 1-7-13", "segments 1, 2/7/12": AHA segment numbers, not a date
_AFTER_SEGMENT_WORD = re.compile(r"\bsegments?\s+(?:\d+\s*(?:,|and|&|-|–|/|to)\s*)*$", re.IGNORECASE)


def _is_date(match: re.Match, text: str) -> bool:
    """Whether a _DATE match reads as a date: a plausible day / month and not AHA segment numbers."""
    if _AFTER_SEGMENT_WORD.search(text[max(0, match.start() - 60):match.start()]):
        return False
    if match.group(4):
        month, day = int(match.group(5)), int(match.group(6))
        return 1 <= month <= 12 and 1 <= day <= 31
    first, second = int(match.group(1)), int(match.group(2))
    return 1 <= min(first, second) <= 12 and 1 <= max(first, second) <= 31


def identifier_findings(text: str) -> list[str]:
    """What in a report text looks like an identifier of its patient or of a person: a name after 'Patient:' or
    'Name:', a DICOM-style FAMILY^GIVEN name, an MRN / patient ID / accession number, a date of birth, a date
    (day <= 31 and month <= 12 either way round, a 2- or 4-digit year, ISO; not AHA segment numbers as in
    "segments 1-7-13"), a physician's name or a signature ("Reported by", "Signed by", any case), a name after a
    title ("Mrs Smith", "Herr Müller"). Empty for a de-identified report. A report with any is never offered: its text
    would go into another patient's SR and PDF (README: the bank holds de-identified reports)."""
    found = [what for what, pattern in _IDENTIFIER_PATTERNS if pattern.search(text)]
    if any(_is_date(match, text) for match in _DATE.finditer(text)):
        found.insert(4, "a date")
    return found


# ----------------------------------------------------------------------------------------------------------------
# Length: one huge report must not slow every study
# ----------------------------------------------------------------------------------------------------------------

#: characters of a report text the node uses (the shipped bank's longest report has about 700); the rest is cut
MAX_REPORT_CHARS = 4000


def cut_text(text: str, limit: int = MAX_REPORT_CHARS) -> tuple[str, bool]:
    """The text cut at a word boundary at most `limit` characters in, with a marker saying so, and whether it was
    cut ("… [cut here: the report's remaining 1418000 characters are not used]")."""
    if len(text) <= limit:
        return text, False
    head = text[:limit]
    space = head.rfind(" ")
    head = head[:space] if space > limit // 2 else head
    return f"{head.rstrip()} … [cut here: the report's remaining {len(text) - len(head)} characters are not used]", True


def shorten(text: str, width: int) -> str:
    """The text cut at a word boundary to at most `width` characters, an ellipsis where it was cut."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    head = text[:width - 1]
    space = head.rfind(" ")
    return (head[:space] if space > width // 2 else head).rstrip(" ,;:") + "…"


# ----------------------------------------------------------------------------------------------------------------
# Numbers: every numeral of another patient's report is blanked, but reference limits and cut-offs
# ----------------------------------------------------------------------------------------------------------------

#: what the radiologist fills in where a prior report had a number
BLANK = "___"
_NUM = r"\d+(?:[.,]\d+)?"
#: a date (12/03/2025, 12.03.1958, 2024-03-02) or a number, possibly a range / ratio / ± pair
_TOKEN = re.compile(
    r"(?<![\w.,])(?:\d{1,2}[./-]\d{1,2}[./-](?:\d{4}|\d{2})|(?:19|20)\d{2}-\d{2}-\d{2}|"
    + _NUM + r"(?:\s*(?:-|–|/|to|±|\+/-)\s*" + _NUM + r")*)(?![\d])")
_ONE = re.compile(_NUM)
#: words before a number that make it a limit, not a patient's value ("(normal 57-77 %)", "at least 15 %", "< 35 %")
_LIMIT_BEFORE = re.compile(
    r"(?:\bnormal(?:\s+range)?|\breference(?:\s+range)?|\bref\.?|\brange|\bcut-?\s?off(?:\s+of)?|\bthreshold(?:\s+of)?|"
    r"\bat\s+least|\bat\s+most|\bmore\s+than|\bgreater\s+than|\bless\s+than|\bfewer\s+than|\bexceeding|"
    r"\bup\s+to|\bULN|\bLLN|≥|≤|>=|<=|>|<)\s*:?\s*(?:of\s+)?$", re.IGNORECASE)
_LIMIT_AFTER = re.compile(r"^\s*(?:%|mm|mL|ml|g|ms)?\s*(?:or\s+(?:more|greater|above|higher|less|lower|below)|"
                          r"and\s+(?:above|over|more)|\s*cut-?\s?off)\b", re.IGNORECASE)
#: where "N or more / or less" reads as a criterion, not a patient's value: a criterion word earlier in the clause
#: ("normal", "cut-off", "threshold", "defined as", "considered", "criterion", "reference", "guideline") ...
_CRITERION_BEFORE = re.compile(r"\b(?:normal|cut-?\s?off|threshold|criteri\w*|defin\w*|consider\w*|reference|"
                               r"guidelines?|indicat\w*|recommend\w*)\b", re.IGNORECASE)
#: ... or a category stated with "of" ("Scar burden of 15% or more." / "... or more is associated with")
_CATEGORY_OF = re.compile(r"\b(?:burden|extent|scar\s+size|infarct\s+size)\s+of\s*$", re.IGNORECASE)
_CATEGORY_END = re.compile(r"^\s*(?:%|mm|mL|ml|g|ms)?\s*(?:or\s+(?:more|greater|above|higher|less|lower|below)|"
                           r"and\s+(?:above|over|more))(?:\s*(?:[.;)]|$)|\s+(?:is|are)\b)", re.IGNORECASE)
_CLAUSE_START = re.compile(r"[.;:!?(]\s*(?=[^.;:!?(]*$)")
_GLUED_VALUE = re.compile(r"(?<=[A-Za-z])\d+(?:[.,]\d+)?(?=\s?(?:%|mL|ml|mm|ms\b|g\b|cm))")
_SEGMENT_LIST = re.compile(r"\bsegments?\s+$", re.IGNORECASE)
_SEGMENT_LIST_CONT = re.compile(r"\bsegments?\s+(?:\d+\s*(?:,|and|&|-|–|to)\s*)+$", re.IGNORECASE)
#: not a patient's value: "17-segment", "1.5 T"/"3T" field strength, "TID 1500"
_NOT_A_VALUE_AFTER = re.compile(r"^(?:-segment|\s?T\b)")
_NOT_A_VALUE_BEFORE = re.compile(r"\bTID\s+$|\^$")


def _criterion_after(text: str, match: re.Match) -> bool:
    """Whether the number is a limit by the words after it ("15 % or more", "35 % cut-off") in a clause that reads
    as a criterion ("a scar burden of 15 % or more is ...", "normal: 57 % or more"); "LVEF was 30 or less" is a
    patient's value."""
    after = text[match.end():match.end() + 40]
    if not _LIMIT_AFTER.match(after):
        return False
    if re.match(r"^\s*(?:%|mm|mL|ml|g|ms)?\s*cut-?\s?off", after, re.IGNORECASE):
        return True
    start = max(0, match.start() - 120)
    clause_start = _CLAUSE_START.search(text[start:match.start()])
    clause = text[start + clause_start.end() if clause_start else start:match.start()]
    return bool(_CRITERION_BEFORE.search(clause)) or (bool(_CATEGORY_OF.search(clause)) and
                                                      bool(_CATEGORY_END.match(after)))


def blank_measurements(text: str, keep_segments: bool = True) -> tuple[str, int]:
    """The text with every numeral replaced by BLANK, and how many were replaced: a suggestion is another patient's
    report, and any number in it (a volume, "25 per cent", "0.25", "8 of 9 slices", "a 65 yo man", a date) is that
    patient's, whatever unit or word follows. Kept, because they are no patient's value: reference limits and
    cut-offs ("(normal 57-77 %)", "at least 15 %", "< 35 %", "N or more / or less" only where the clause
    reads as a criterion: "scar burden of 15 % or more", "cut-off 35 % or less"; "LVEF was 30 or less" is blanked), AHA segment numbers after "segment(s)"
    (blanked too with `keep_segments` False: where the node assigned no segments), "17-segment", field strength
    ("1.5 T") and "TID 1500". Units and words stay ("ejection fraction ___%")."""
    count = 0
    out, last = [], 0
    for match in _TOKEN.finditer(text):
        before, after = text[max(0, match.start() - 40):match.start()], text[match.end():match.end() + 16]
        keep = (bool(_LIMIT_BEFORE.search(before)) or _criterion_after(text, match)
                or bool(_NOT_A_VALUE_AFTER.match(after)) or bool(_NOT_A_VALUE_BEFORE.search(before))
                or (keep_segments and bool(_SEGMENT_LIST.search(before) or _SEGMENT_LIST_CONT.search(before))))
        out.append(text[last:match.start()])
        token = match.group(0)
        if keep:
            out.append(token)
        elif re.fullmatch(r"\d{1,2}[./-]\d{1,2}[./-](?:\d{4}|\d{2})|(?:19|20)\d{2}-\d{2}-\d{2}", token):
            out.append(BLANK)
            count += 1
        else:
            replaced, blanked = _ONE.subn(BLANK, token)  # "226/159" -> "___/___", "25±5" -> "___±___"
            out.append(replaced)
            count += blanked
        last = match.end()
    out.append(text[last:])
    # a value run into its name ("LVEF45%", "EDV250ml"): letters before it kept the token pattern off it
    text, glued = _GLUED_VALUE.subn(BLANK, "".join(out))
    return text, count + glued


# ----------------------------------------------------------------------------------------------------------------
# What a report text claims, sentence by sentence
# ----------------------------------------------------------------------------------------------------------------

_SENTENCE = re.compile(r"(?<=[.!?;])\s+(?=\S)|\n+")
_LABEL = re.compile(r"^\s*((?:Findings|Impression|Conclusion|Befund|Beurteilung|Summary|Assessment)\s*:\s*)",
                    re.IGNORECASE)

_LGE_TERM = (r"(?:late\s+(?:gadolinium\s+)?enhancement|late[- ]enhancement|\bLGE\b|delayed\s+enhancement|"
             r"\benhancement\b|\benhanced\s+myocardium|\binfarct\w*|\bscar\w*|\bfibrosis|\w*narbe\w*|\w*infarkt\w*|"
             r"réhaussement|rehaussement|\bcicatri\w*)")
_LGE = re.compile(_LGE_TERM, re.IGNORECASE)
_LGE_NEGATED_WORDS = (r"(?:\s+(?:evidence\s+of|signs?\s+of|focal|diffuse|or|nor|significant|relevant|definite|"
                      r"myocardial|visible|abnormal|areas?\s+of|subendocardial|transmural|pathological|late|"
                      r"gadolinium|\w+-wall|(?:antero|infero|postero)?(?:septal|anterior|inferior|lateral|posterior)))*")
_LGE_ABSENT = re.compile(
    r"\b(?:no|without|absence\s+of|negative\s+for|free\s+of|nor)\b"
    # a list the negation runs over: "no oedema, scar or fibrosis" (no LGE word among the listed)
    + r"(?:\s+(?!" + _LGE_TERM + r")[\w-]+(?:\s*,|\s+or\b|\s+nor\b)){0,3}"
    + _LGE_NEGATED_WORDS + r"\s+" + _LGE_TERM
    + r"(?:\s*(?:,|\bor\b|\bnor\b)" + _LGE_NEGATED_WORDS + r"\s+" + _LGE_TERM + r")*"
    + r"|\bkein\w*\s+(?:\w+\s+){0,2}(?:late[- ]?enhancement|LGE|narbe|infarkt|fibrose)|\bpas\s+de\s+(?:réhaussement|"
    r"rehaussement|cicatrice)|\bstructurally\s+normal\s+heart|\bnormal\s+(?:late\s+enhancement|LGE)\s+study|"
    r"\b(?:infarct\w*|scar|LGE)\s+(?:is\s+)?(?:excluded|absent)|\bnormal\s+(?:late\s+(?:gadolinium\s+)?enhancement|LGE)\b|\bunauffällig\w*\s+(?:kardio|herz)",
    re.IGNORECASE)
_NORMAL_STUDY = re.compile(r"\b(?:structurally\s+normal\s+heart|normal\s+(?:cardiac\s+)?(?:MRI|MR|CMR|study|"
                           r"cardiac\s+magnetic)|unauffällig\w*\s+(?:kardio|herz)\w*)", re.IGNORECASE)
#: a word between an extent word and a scar word that names another finding: the extent qualifies that finding
#: ("moderate mitral regurgitation and inferior infarct"), not the scar
_OTHER_FINDING = (r"\b(?:regurgitation|insufficienc\w*|stenosis|dysfunction|impair\w*|reduc\w*|hypokine\w*|akine\w*|"
                  r"dyskine\w*|effusion|dilat\w*|hypertroph\w*|thicken\w*|o?edema|function|valve|valvular|mitral|"
                  r"aortic|tricuspid|pericardi\w*|LV|RV)\b")
#: an extent word qualifying a scar word: before it, with no other finding between ("large inferior infarct"); "of /
#: with moderate extent"; or after it, ending its clause ("Ischaemic scar, moderate: 13% LGE", break49b #3; not
#: "Inferior infarct scar, moderate LV dysfunction")
_EXTENT = re.compile(
    r"\b(small|minor|limited|tiny|moderate|moderately\s+sized|large|extensive|massive|big|klein\w*|mittelgro\w*|"
    r"gro(?:ß|ss)\w*|ausgedehnt\w*)\b(?:(?!" + _OTHER_FINDING + r")[\w\s,-]){0,40}?"
    + _LGE_TERM + r"|\b(?:of|with)\s+(small|moderate|large|extensive)\s+(?:extent|size|burden)"
    + r"|" + _LGE_TERM + r"\s*,\s*(?:very\s+)?(small|moderate|large|extensive)\b"
    r"(?=\s*(?:[:;.,(]|\d|$|extent|size|burden))",
    re.IGNORECASE)
#: a scar burden stated as a threshold it reaches ("Scar burden of 15% or more", "Large scar burden (at least 15% of
#: LV mass)", "LGE extent >= 15 %"): the number is the threshold (blank_measurements keeps it), read as "large" where it
#: is LARGE_BURDEN_TEXT_PERCENT or more
_BURDEN_AT_LEAST = re.compile(
    r"\b(?:scar|LGE|infarct\w*|enhancement|fibrosis)\s+(?:burden|size|extent)\s*(?:of\s+)?\(?\s*"
    r"(?:(?:at\s+least|more\s+than|greater\s+than|over|exceeding|≥|>=|>)\s*(?P<least>\d+(?:[.,]\d+)?)\s*%"
    r"|(?P<more>\d+(?:[.,]\d+)?)\s*%\s*(?:or\s+(?:more|greater|above|higher)|and\s+(?:above|over|more)))",
    re.IGNORECASE)
#: the %LGE a "burden of N % or more" must name to read as a large-burden claim: Chan 2014's cut-off (LGE >= 15 % of
#: the LV mass), the rule the bank's writer states (engines/retrieval/report_writer.py)
LARGE_BURDEN_TEXT_PERCENT = 15.0
#: where a sentence names the technique, not a finding ("Late gadolinium enhancement (LGE) images were reviewed")
_TECHNIQUE = re.compile(r"(?:delayed|late)\s+(?:gadolinium\s+)?enhancement\s*(?:\(LGE\)\s*)?(?:imaging|images?|"
                        r"sequences?|study|acquisition|technique)|\bLGE\s+(?:imaging|images?|sequences?|study)|"
                        r"\bafter\s+gadolinium", re.IGNORECASE)
_MVO = re.compile(r"microvascular\s+obstruction|\bMVO\b|no-?reflow", re.IGNORECASE)
_MVO_ABSENT = re.compile(r"\b(?:no|without|absence\s+of)\s+(?:evidence\s+of\s+)?(?:microvascular\s+obstruction|MVO|"
                         r"no-?reflow)|\bMVO\s*:?\s*(?:none|absent|no)\b", re.IGNORECASE)
_MVO_CLAUSE = re.compile(r"\s*,?\s*\b(?:with|and)\s+(?:an?\s+)?(?:(?:small|large|extensive|associated)\s+)?"
                         r"(?:area\s+of\s+|core\s+of\s+)?(?:microvascular\s+obstruction|MVO|no-?reflow)"
                         r"(?:\s*\([^)]*\))?", re.IGNORECASE)
_WALL = re.compile(r"\b(?:antero|infero|postero)?(?:septal|septum|anterior|inferior|lateral|posterior)\w*"
                   r"(?:[- ](?:septal|lateral|walls?))?|\b(?:LAD|RCA|LCx|LCX|circumflex|coronary\s+distribution|"
                   r"vorderwand|hinterwand|seitenwand|septum)\b|\bsegments?\s+[\d ,and&-]+", re.IGNORECASE)

_RV_TERM = re.compile(r"\bright\s+ventric\w*|\bRV\w*\b|\bRVEF\b|rechte\w*\s+ventrikel", re.IGNORECASE)
_LV_TERM = re.compile(r"\bleft\s+ventric\w*|\bLV\w*\b|\bLVEF\b|linke\w*\s+ventrikel|\bglobal\s+systolic",
                      re.IGNORECASE)
_BI_TERM = re.compile(r"\bbiventricular|\bboth\s+ventricles|\bventricles\b|"
                      r"\b(?:LV|left)\s*(?:and|&|/)\s*(?:RV|right)\b|\b(?:RV|right)\s*(?:and|&|/)\s*(?:LV|left)\b",
                      re.IGNORECASE)
#: where a clause naming both ventricles is cut so that each grade stays with its own ventricle
_VENTRICLE_SPLIT = re.compile(r"\band\b|\bdespite\b|\bwith\b|\bversus\b|\bvs\.?|\bcompared\s+to\b|\bbut\b",
                              re.IGNORECASE)
#: a sentence claim saying it holds a statement the check cannot tie to one ventricle: the sentence is not offered
UNCHECKED = ("unchecked", True)
_FUNCTION_TERM = re.compile(r"function|\bEF\b|ejection\s+fraction|systolic|contractil|pump|LVEF|RVEF|"
                            r"dysfunction|kinetic|dynamic|pumpfunktion", re.IGNORECASE)
_GRADES = (
    ("hyperdynamic", re.compile(r"hyperdynamic|supra-?normal|hyperkinetic|hyperkinetisch", re.IGNORECASE)),
    ("severe", re.compile(r"\b(?:severe(?:ly)?|marked(?:ly)?|significantly|hochgradig|schwer)\b", re.IGNORECASE)),
    ("moderate", re.compile(r"\bmoderate(?:ly)?\b|\bmittelgradig", re.IGNORECASE)),
    ("mild", re.compile(r"\b(?:mild(?:ly)?|slight(?:ly)?|borderline|leicht|geringgradig)\b", re.IGNORECASE)),
)
_REDUCED = re.compile(r"\breduced|\bimpaired|\bdepressed|\bdysfunction|\bdecreased|\bhypokine|eingeschränkt|"
                      r"reduziert", re.IGNORECASE)
_NORMAL_FUNCTION = re.compile(r"\b(?:normal|preserved|good|regular|unremarkable|normale?)\b", re.IGNORECASE)
_NO_DYSFUNCTION = re.compile(r"\bno\s+(?:\w+\s+){0,2}dysfunction", re.IGNORECASE)
_SIZE_NORMAL = re.compile(r"non-?\s?dilated|not\s+(?:\w+\s+)?dilated|normal(?:\s+in)?\s+size|normal[- ]sized|"
                          r"normal\s+(?:(?:LV|RV|left|right|biventricular|ventricular|and|&|/|cavity)\s*){0,4}(?:size|dimensions|volumes?)\b|no\s+dilat\w*|nicht\s+dilatiert", re.IGNORECASE)
_SIZE_DILATED = re.compile(r"dilat\w*|enlarged|enlargement|dilatiert|\bDCM\b", re.IGNORECASE)
_HYPERTROPHY_ABSENT = re.compile(r"\bno\s+(?:\w+\s+){0,2}hypertroph\w*|without\s+(?:\w+\s+){0,2}hypertroph\w*|"
                                 r"normal\s+(?:LV\s+|left\s+ventricular\s+)?wall\s+thickness|keine\s+hypertroph\w*",
                                 re.IGNORECASE)
_HYPERTROPHY = re.compile(r"hypertroph\w*|\bHCM\b|increased\s+(?:LV\s+)?wall\s+thickness|thickened|wall\s+thickening",
                          re.IGNORECASE)


@dataclass(frozen=True)
class Sentence:
    """One sentence of a report, its label ("Impression: ") apart, and what it claims: a tuple of (point, value)
    pairs, point one of "unchecked" (True: a grade or size the check cannot tie to one ventricle; the sentence is
    never offered), "lge" (True/False: True where any LGE statement is not negated), "extent" ("small", "moderate", "large"), "mvo" (True/False), "wall"
    (True: names a wall, territory or segment), "lv_function" / "rv_function" (a grade: "normal", "hyperdynamic",
    "mild", "moderate", "severe", "reduced"), "lv_size" / "rv_size" ("normal", "dilated"), "hypertrophy" (bool),
    "normal_study" (True: "Normal cardiac MRI", "Structurally normal heart")."""

    label: str
    text: str
    claims: tuple[tuple[str, object], ...]


def _function_grade(clause: str) -> str | None:
    if _NO_DYSFUNCTION.search(clause):
        return "normal"
    for grade, pattern in _GRADES:
        if pattern.search(clause) and (grade == "hyperdynamic" or _REDUCED.search(clause)):
            return grade
    if _REDUCED.search(clause):
        return "reduced"
    if _NORMAL_FUNCTION.search(clause):
        return "normal"
    return None


def _named_ventricles(clause: str) -> list[tuple[int, str]]:
    return sorted([(m.start(), "rv") for m in _RV_TERM.finditer(clause)] +
                  [(m.start(), "lv") for m in _LV_TERM.finditer(clause)])


def _ventricle_clauses(sentence: str) -> list[tuple[str, bool]]:
    """The sentence cut at , ; : ( while whereas but, and a part that names both ventricles (not jointly, "LV and RV
    size") cut again at and / despite / with / versus, so that each grade is read with its own ventricle; each part
    with whether it came from such a second cut."""
    clauses = []
    for clause in re.split(r"[,;:(]|\bwhile\b|\bwhereas\b|\bbut\b", sentence):
        if not _BI_TERM.search(clause) and len({side for _, side in _named_ventricles(clause)}) > 1:
            clauses += [(part, True) for part in _VENTRICLE_SPLIT.split(clause)]
        else:
            clauses.append((clause, False))
    return clauses


def _ventricle_claims(sentence: str) -> list[tuple[str, object]]:
    """LV / RV function, size and hypertrophy claims, clause by clause, each clause's ventricle the one it names
    ("The right ventricle is not dilated with moderately reduced function" -> RV; "Severely reduced RV function and
    normal LV function" -> RV severe, LV normal); LV where none is named. A clause that still names both ventricles
    apart and holds a grade or size gives UNCHECKED: its grade cannot be tied to one ventricle."""
    claims: list[tuple[str, object]] = []
    side: tuple[str, ...] = ("lv",)
    for clause, cut in _ventricle_clauses(sentence):
        states = bool(_FUNCTION_TERM.search(clause) and _function_grade(clause)) or bool(
            _SIZE_NORMAL.search(clause) or _SIZE_DILATED.search(clause))
        if cut and not states and _function_grade(clause):
            claims.append(UNCHECKED)  # "Severely reduced and dilated LV and normal RV": "severely reduced" of which?
            continue
        if _BI_TERM.search(clause):
            side = ("lv", "rv")
        else:
            named = _named_ventricles(clause)
            if len({n for _, n in named}) > 1:
                if states:
                    claims.append(UNCHECKED)
                side = (named[-1][1],)
                continue
            if named:
                side = (named[-1][1],)
        if _FUNCTION_TERM.search(clause):
            grade = _function_grade(clause)
            if grade:
                claims += [(f"{s}_function", grade) for s in side]
        if _SIZE_NORMAL.search(clause):
            claims += [(f"{s}_size", "normal") for s in side]
        elif _SIZE_DILATED.search(clause):
            claims += [(f"{s}_size", "dilated") for s in side]
        if _HYPERTROPHY_ABSENT.search(clause):
            claims.append(("hypertrophy", False))
        elif _HYPERTROPHY.search(clause):
            claims.append(("hypertrophy", True))
    return claims


def _uncovered(term: re.Pattern, text: str, covered: list[tuple[int, int]]) -> bool:
    """Whether any match of `term` in the text lies outside every covered span."""
    return any(not any(start <= m.start() and m.end() <= end for start, end in covered) for m in term.finditer(text))


def _lge_stated(text: str) -> bool | None:
    """What a sentence states on LGE, match by match: True where any LGE term is not negated ("Subendocardial LGE
    of the inferior wall, no enhancement elsewhere" states LGE), False where every one is (or the sentence says
    "structurally normal heart"), None where it names none (the technique, "LGE images were reviewed", is none)."""
    absent = [m.span() for m in _LGE_ABSENT.finditer(text)]
    if _uncovered(_LGE, text, absent + [m.span() for m in _TECHNIQUE.finditer(text)]):
        return True
    return False if absent else None


def sentence_claims(text: str) -> tuple[tuple[str, object], ...]:
    """What one sentence claims (see Sentence)."""
    claims: list[tuple[str, object]] = []
    normal_study = bool(_NORMAL_STUDY.search(text))
    stated = _lge_stated(text)
    if stated is False:
        claims.append(("lge", False))
    elif stated:
        claims.append(("lge", True))
        for match in _EXTENT.finditer(text):
            word = (match.group(1) or match.group(2) or match.group(3) or "").lower()
            claims.append(("extent", "small" if word.startswith(("small", "minor", "limited", "tiny", "klein")) else
                           "moderate" if word.startswith(("moderate", "mittelgro")) else "large"))
        if stated_large_burden(text):
            claims.append(("extent", "large"))
    if _MVO.search(text):
        claims.append(("mvo", _uncovered(_MVO, text, [m.span() for m in _MVO_ABSENT.finditer(text)])))
    if _WALL.search(text) and (_LGE.search(text) or _MVO.search(text)):
        claims.append(("wall", True))
    claims += _ventricle_claims(text)
    if normal_study:  # "Normal cardiac MRI", "Unauffällige Kardio-MRT": no scar, normal LV
        claims.append(("normal_study", True))
    return tuple(dict.fromkeys(claims))


def stated_large_burden(text: str) -> list[tuple[int, int, str]]:
    """(start, end, words) of each scar burden the text states as a threshold of LARGE_BURDEN_TEXT_PERCENT or more
    ("Scar burden of 15% or more", "scar burden (at least 15% of LV mass)"); "Scar burden approximately 14%" is a
    value, not a threshold, and "burden of 5 % or more" is no large burden."""
    found = []
    for match in _BURDEN_AT_LEAST.finditer(text):
        number = float((match.group("least") or match.group("more")).replace(",", "."))
        if number >= LARGE_BURDEN_TEXT_PERCENT:
            found.append((match.start(), match.end(), match.group(0)))
    return found


def split_sentences(text: str) -> list[Sentence]:
    """The report's sentences with what each claims; a "Findings:" / "Impression:" label kept apart."""
    found = []
    for part in _SENTENCE.split(text):
        if not part.strip():
            continue
        label_match = _LABEL.match(part)
        label = label_match.group(1) if label_match else ""
        body = part[len(label):] if label else part
        if body.strip():
            found.append(Sentence(label=label, text=body.strip(), claims=sentence_claims(body)))
        elif label:
            found.append(Sentence(label=label, text="", claims=()))
    return found


def report_claims(text: str) -> frozenset[tuple[str, object]]:
    """Every claim a report text makes (the union over its sentences)."""
    return frozenset(claim for sentence in split_sentences(text) for claim in sentence.claims)


# ----------------------------------------------------------------------------------------------------------------
# What the node measured in this study, on the same points
# ----------------------------------------------------------------------------------------------------------------

#: LVEF normal range (SCMR 2020 adult, both sexes; the node's own cine flags quote it) and the RV systolic
#: dysfunction cut-off (Gulati 2013), in %
LVEF_NORMAL = (57.0, 77.0)
RVEF_CUT_OFF = 45.0
#: the EF each graded claim allows, in % (low, high): wider than the usual grade limits (LV mild 45-54, moderate
#: 30-44, severe < 30) because graders differ and the node's EF has an error of a few points
LV_GRADE_EF = {"normal": (52.0, 200.0), "hyperdynamic": (72.0, 200.0), "mild": (40.0, LVEF_NORMAL[0]),
               "moderate": (28.0, 47.0), "severe": (0.0, 37.0), "reduced": (0.0, LVEF_NORMAL[0])}
RV_GRADE_EF = {"normal": (40.0, 200.0), "hyperdynamic": (70.0, 200.0), "mild": (38.0, RVEF_CUT_OFF),
               "moderate": (28.0, 42.0), "severe": (0.0, 33.0), "reduced": (0.0, RVEF_CUT_OFF)}
#: maximal end-diastolic LV wall thickness (mm): hypertrophy at or above, none under the lower figure (adults only:
#: a child's normal wall is far thinner, 5.2 ± 1.1 mm at the basal septum at 6-18 years, "Cardiovascular magnetic
#: resonance normal values in children for biventricular wall thickness and mass", JCMR 2020, doi
#: 10.1186/s12968-020-00692-2, so "no hypertrophy" is not judged for a child, while the adult 15 mm holds at any age)
HYPERTROPHY_MM = 15.0
NO_HYPERTROPHY_MM = 12.0
#: %LGE a "small" scar cannot reach (what the node measured is there, whatever lies outside the slices) and a
#: "moderate" one reaches, less the model's %LGE mean absolute error (`lge_percent_validation.mae`, 4-6 points: a
#: "moderate" is refused only under about 5 %, and not at all where the error is unknown), where the large-burden flag
#: is stated (the stack covers the LV); "large" / "extensive" is
#: held to the node's large-burden flag (15 %), "small" / "moderate" too. The bank's writer names "small" under 10 %
#: (engines/retrieval/report_writer.py)
SMALL_EXTENT_MAX_PERCENT = 10.0
#: standard deviations of the adult normal values (cine_metrics.NORMAL_VALUES, whose upper limit is the mean +
#: NORMAL_RANGE_SD SD) above the mean at which an indexed EDV reads "dilated" whatever the patient's age: three SD
#: beyond the adult upper limit of either sex (LV EDVi 141 mL/m², RV EDVi 157 mL/m²), a margin chosen to lie beyond
#: the upper limits of healthy children's indexed volumes (paediatric SSFP reference curves: Buechel EV et al., JCMR
#: 2009;11:19; van der Ven JPG et al., Eur Heart J Cardiovasc Imaging 2020;21:102-113), which the node does not
#: apply, and beyond the model's EDV error (a few mL/m²). Where the adult ranges are withheld (a child) this is the
#: only size the node holds a report's words to; under it a child's ventricle size is not judged (break51c #1: a
#: 10-year-old's LV EDVi of 168 mL/m² was offered "Non-dilated LV")
EDVI_BEYOND_NORMAL_SD = NORMAL_RANGE_SD + 3.0
EDVI_BEYOND_ANY_NORMAL = {key: max(NORMAL_VALUES[key][sex][0] + EDVI_BEYOND_NORMAL_SD * NORMAL_VALUES[key][sex][1]
                                   for sex in ("M", "F"))
                          for key in ("lv_edvi_ml_m2", "rv_edvi_ml_m2")}


@dataclass(frozen=True)
class NodeFacts:
    """What the node measured and states for this study on the points a report text claims; None = not known."""

    lge_measured: bool = False
    significant_lge: bool | None = None
    lge_percent: float | None = None
    large_burden: bool | None = None
    mvo_stated: bool = False  # the node states MVO presence (mvo_validation.presence_stated)
    mvo: bool | None = None
    segments_assigned: bool = False  # AHA segments assigned to the LGE (a wall can be named)
    scar_segments: frozenset[int] | None = None  # the AHA segments (1-17) holding scar; None where not assigned
    transmural: bool | None = None  # any scarred segment's scarred part over 50 % transmural (class 51-75 / 76-100)
    lge_presence_uncertain: bool = False  # lge_presence kind "uncertain": neither scar nor no scar may be stated
    lge_mae: float | None = None  # the model's %LGE mean absolute error on input like this (lge_percent_validation)
    cine_measured: bool = False
    lv_ef: float | None = None
    rv_ef: float | None = None
    lv_ef_judged: bool = True  # False where the LVEF flag lies within the model's error (normal/low not stated)
    rv_ef_judged: bool = True
    lv_dilated: bool | None = None
    rv_dilated: bool | None = None
    hypertrophy: bool | None = None
    # False for a child (cine `reference_ranges.adult_ranges_applied` false): sizes and wall thickness are then known
    # only where no normal heart reaches them (EDVI_BEYOND_ANY_NORMAL, HYPERTROPHY_MM), else unknown, not normal
    adult_ranges_applied: bool = True
    # why the large-burden flag is not given (summary `lge.large_scar_burden_reason`) where %LGE is measured and the
    # flag is None; a report's large-burden words are then not offered (fitting_text)
    burden_withheld: str | None = None
    # the flag withheld for a child, but %LGE under its cut-off by more than the model's error on a stack that covers
    # the LV (suggestions.burden_under_cutoff): a "large" scar contradicts the measurement
    large_excluded: bool = False


def _float(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) != float("inf") else None


def _size(flags: list[str] | None, names: tuple[str, ...], volume: float | None, complete: bool) -> bool | None:
    """Dilated per the node's range flags: an 'above normal range' flag of the EDV / EDVi -> True; a flag for one sex
    only or within the model's error -> unknown; no flag on a complete stack -> False; no flag list -> unknown."""
    if flags is None:
        return None
    mine = [flag for flag in flags if flag.startswith(names)]
    if any("within the model's known error" in flag or "for one sex" in flag for flag in mine):
        return None
    if any("above" in flag.split("(")[0] for flag in mine):
        return True
    if volume is None or not complete:
        return None
    return False


def adult_ranges_applied(cine: dict | None) -> bool:
    """Whether the cine block judged its values against the adult ranges: False where `reference_ranges` says not
    (a child, reference_age) or, in a summary without that block, a flag says so (ADULT_RANGES_NOT_APPLIED)."""
    if not isinstance(cine, dict):
        return True
    ranges = cine.get("reference_ranges")
    if isinstance(ranges, dict) and ranges.get("adult_ranges_applied") is False:
        return False
    flags = cine.get("flags") if isinstance(cine.get("flags"), list) else []
    return not any(isinstance(flag, str) and flag.startswith(ADULT_RANGES_NOT_APPLIED) for flag in flags)


def _beyond_any_normal(cine: dict, key: str) -> bool:
    """Whether the indexed EDV `key` (cine `indexed`) reaches EDVI_BEYOND_ANY_NORMAL: dilated at any age."""
    value = _float((cine.get("indexed") or {}).get(key)) if isinstance(cine.get("indexed"), dict) else None
    return value is not None and value >= EDVI_BEYOND_ANY_NORMAL[key]


def node_facts(summary: dict, significant_lge: bool | None = None, large_burden: bool | None = None,
               mvo: bool | None = None, presence_uncertain: bool = False, large_excluded: bool = False) -> NodeFacts:
    """The node's facts from a study's summary blocks ("lge", "cine"); the decisive LGE points as node_lge_findings
    judged them (suggestions.py); from the LGE's AHA segments (`aha_segments.segments`, where applicable) the
    segments holding scar (`scar_voxels` > 0) and whether any of them is transmural: the class of its scarred part's
    transmurality (`transmurality_scarred_mean_percent`, the mean over the rays that cross scar, not diluted by the
    segment's unscarred rays) 51-75 or 76-100; unknown (None) where a scarred segment lacks it (an older summary).

    Size: the range flags where the adult ranges apply (_size); dilated at any age where the indexed EDV reaches
    EDVI_BEYOND_ANY_NORMAL; for a child (adult_ranges_applied) unknown under it: a withheld flag is no "normal".
    Hypertrophy: a maximal wall of HYPERTROPHY_MM or more, none under NO_HYPERTROPHY_MM for an adult only (a child's
    normal wall is thinner). `large_excluded`: see NodeFacts."""
    lge = summary.get("lge") if isinstance(summary.get("lge"), dict) else None
    cine = summary.get("cine") if isinstance(summary.get("cine"), dict) else None
    lge_measured = bool(lge) and lge.get("determined") is not False and _float(lge.get("lge_percent")) is not None
    segments = bool(lge_measured and isinstance(lge.get("aha_segments"), dict) and lge["aha_segments"].get("applicable"))
    facts = dict(lge_measured=lge_measured, significant_lge=significant_lge if lge_measured else None,
                 lge_percent=_float(lge.get("lge_percent")) if lge_measured else None,
                 large_burden=large_burden if lge_measured else None,
                 mvo_stated=lge_measured and mvo is not None, mvo=mvo if lge_measured else None,
                 segments_assigned=segments, lge_presence_uncertain=lge_measured and presence_uncertain,
                 lge_mae=_float((lge.get("lge_percent_validation") or {}).get("mae")) if lge_measured else None,
                 large_excluded=lge_measured and large_excluded)
    if lge_measured and lge.get("large_scar_burden") is None and not large_excluded:
        facts["burden_withheld"] = str(lge.get("large_scar_burden_reason") or "the large-burden flag is not given")
    if segments:
        listed = [v for v in lge["aha_segments"].get("segments") or [] if isinstance(v, dict)]
        if listed and all(isinstance(v.get("scar_voxels"), int) for v in listed):
            scarred = [v for v in listed if v["scar_voxels"] > 0]
            facts["scar_segments"] = frozenset(int(v["segment"]) for v in scarred)
            depths = [_float(v.get("transmurality_scarred_mean_percent")) for v in scarred if v["segment"] != 17]
            facts["transmural"] = None if None in depths else any(
                transmurality_class(depth) in TRANSMURAL_CLASSES for depth in depths)
    cine_measured = bool(cine) and cine.get("determined") is not False and (
        _float(cine.get("lv_ef_percent")) is not None or _float(cine.get("lv_edv_ml")) is not None)
    if cine_measured:
        flags = [flag for flag in cine["flags"] if isinstance(flag, str)] if isinstance(cine.get("flags"), list) else None
        complete = (cine.get("coverage") or {}).get("complete") is not False
        wall = _float((cine.get("max_wall_thickness") or {}).get("max_mm")) if isinstance(
            cine.get("max_wall_thickness"), dict) else _float(cine.get("max_wall_thickness_mm"))
        adult = adult_ranges_applied(cine)
        lv_dilated = _size(flags, ("LV EDV ", "LV EDVi "), _float(cine.get("lv_edv_ml")), complete) if adult else None
        rv_dilated = _size(flags, ("RV EDV ", "RV EDVi "), _float(cine.get("rv_edv_ml")), complete) if adult else None
        facts.update(
            cine_measured=True, lv_ef=_float(cine.get("lv_ef_percent")), rv_ef=_float(cine.get("rv_ef_percent")),
            lv_ef_judged=not any(f.startswith("LVEF") and ("known error" in f or "one sex" in f) for f in flags or []),
            rv_ef_judged=not any(f.startswith("RVEF") and ("known error" in f or "one sex" in f) for f in flags or []),
            lv_dilated=True if _beyond_any_normal(cine, "lv_edvi_ml_m2") else lv_dilated,
            rv_dilated=True if _beyond_any_normal(cine, "rv_edvi_ml_m2") else rv_dilated,
            hypertrophy=None if wall is None else True if wall >= HYPERTROPHY_MM else
            False if wall < NO_HYPERTROPHY_MM and adult else None,
            adult_ranges_applied=adult)
    return NodeFacts(**facts)


# ----------------------------------------------------------------------------------------------------------------
# Walls, territories and transmurality named in a text, held against the node's AHA segments
# ----------------------------------------------------------------------------------------------------------------

#: the transmurality classes (aha.TRANSMURALITY_CLASSES) a "transmural" / "predominantly transmural" scar has: over 50 %
TRANSMURAL_CLASSES = frozenset({"51-75", "76-100"})
_BASAL, _MID, _APICAL = frozenset(range(1, 7)), frozenset(range(7, 13)), frozenset(range(13, 18))
#: the AHA segments (Cerqueira et al., Circulation 2002) each wall or territory word names, English and German;
#: "posterior" / "Hinterwand" (older terms for the inferior or inferolateral wall) both; the apical septal segment
#: 14 under anteroseptal and inferoseptal, the apical lateral 16 under anterolateral and inferolateral (the apex has
#: four segments)
WALL_SEGMENTS: tuple[tuple[re.Pattern, frozenset[int]], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), frozenset(segments)) for pattern, segments in (
        (r"left\s+anterior\s+descending|\bLAD\b", TERRITORIES["LAD"]),
        (r"right\s+coronary(?:\s+artery)?|\bRCA\b", TERRITORIES["RCA"]),
        (r"circumflex|\bLCx\b|\bRCX\b", TERRITORIES["LCx"]),
        (r"antero-?septal\w*", (2, 8, 14)),
        (r"(?:infero|postero)-?septal\w*", (3, 9, 14)),
        (r"(?:infero|postero)-?lateral\w*|hinterseitenwand\w*", (5, 11, 16)),
        (r"antero-?lateral\w*|vorderseitenwand\w*", (6, 12, 16)),
        (r"septal\w*|septum\w*", (2, 3, 8, 9, 14)),
        (r"anterior\w*|vorderwand\w*", (1, 7, 13)),
        (r"inferior\w*|unterwand\w*", (4, 10, 15)),
        (r"posterior\w*|hinterwand\w*", (4, 5, 10, 11, 15, 16)),
        (r"lateral\w*|seitenwand\w*|lateralwand\w*", (5, 6, 11, 12, 16)),
        (r"apical\w*|apex|apikal\w*|herzspitze\w*", tuple(_APICAL)),
    ))
_LEVELS = {"basal": _BASAL, "mid": _MID, "midventricular": _MID, "mid-ventricular": _MID, "apical": _APICAL}
_WALL_NAME = re.compile(
    r"\b(?:(?P<level>basal|mid(?:-?ventricular)?|apical)[- ](?=\w))?(?P<wall>"
    + "|".join(f"(?:{pattern.pattern})" for pattern, _ in WALL_SEGMENTS) + r")", re.IGNORECASE)
#: a wall word that names an RV insertion point, not an LV wall ("LGE at the inferior RV insertion point")
_INSERTION_AFTER = re.compile(r"^\s*(?:and\s+\w+\s+)?(?:RV\s+|right\s+ventricular\s+)?insertion", re.IGNORECASE)
_SEGMENT_NUMBERS = re.compile(r"\bsegment(?:s|e)?\s+(?P<numbers>\d+(?:\s*(?:,|and|und|&|-|–|/|to|bis)\s*\d+)*)",
                              re.IGNORECASE)
#: "1-4", "1 to 4", "1 bis 4" in a segment list: the range
_SEGMENT_RANGE = re.compile(r"(\d+)\s*(?:-|–|to|bis)\s*(\d+)", re.IGNORECASE)
#: a wall word naming where the wall moves abnormally, not where scar is ("anterior wall hypokinesia", "hypokinesia
#: of the inferior wall"): not held to the scar segments (the cine points are not either)
_WALL_MOTION_AFTER = re.compile(r"^[\s-]*(?:wall\s+|segments?\s+)?(?:motion|hypokine|akine|dyskine|wandbewegung|"
                                r"hypokinesi|akinesi|dyskinesi)", re.IGNORECASE)
_WALL_MOTION_BEFORE = re.compile(r"(?:hypo|a|dys)kine\w*\s+(?:of\s+)?(?:the\s+)?(?:\w+\s+){0,2}$", re.IGNORECASE)
_TRANSMURAL = re.compile(r"\b(?:(?:predominantly|mostly|largely|near(?:ly)?|almost)[- ])?transmural\w*",
                         re.IGNORECASE)
_TRANSMURAL_NEGATED = re.compile(r"(?:\bnon-?|\bnot\s+(?:\w+\s+)?|\bno\s+(?:\w+\s+){0,2}|\bwithout\s+(?:\w+\s+){0,2}"
                                 r"|\bor\s+)$", re.IGNORECASE)


def wall_segments(match: re.Match) -> frozenset[int]:
    """The AHA segments a _WALL_NAME match names: its wall's (WALL_SEGMENTS), within its level (basal / mid /
    apical) where one is named with it ("apical anterior" = 13)."""
    word = match.group("wall")
    segments = next(segments for pattern, segments in WALL_SEGMENTS if pattern.fullmatch(word))
    level = (match.group("level") or "").lower()
    return segments & _LEVELS[level] if level else segments


def segment_numbers(listed: str) -> set[int]:
    """The AHA segment numbers (1-17) of a segment list ("1, 2 and 4"; "1-4" and "1 to 4" as ranges)."""
    numbers = set()
    for match in _SEGMENT_RANGE.finditer(listed):
        low, high = sorted((int(match.group(1)), int(match.group(2))))
        numbers.update(range(low, high + 1))
    numbers.update(int(n) for n in re.findall(r"\d+", _SEGMENT_RANGE.sub(" ", listed)))
    return {n for n in numbers if 1 <= n <= 17}


def unsupported_walls(text: str, scar_segments: frozenset[int]) -> list[tuple[int, int, str]]:
    """(start, end, words) of each wall, territory or AHA segment list the text names where none of the segments it
    names holds scar (`scar_segments`, the node's AHA result); an RV insertion point ("inferior RV insertion") and a
    wall named for its motion ("anterior wall hypokinesia") are not held to the scar."""
    found = []
    for match in _WALL_NAME.finditer(text):
        if _INSERTION_AFTER.match(text[match.end():match.end() + 40]) \
                or _WALL_MOTION_AFTER.match(text[match.end():match.end() + 40]) \
                or _WALL_MOTION_BEFORE.search(text[max(0, match.start() - 40):match.start()]):
            continue
        if not wall_segments(match) & scar_segments:
            found.append((match.start(), match.end(), match.group(0)))
    for match in _SEGMENT_NUMBERS.finditer(text):
        if _WALL_MOTION_AFTER.match(text[match.end():match.end() + 40]) \
                or _WALL_MOTION_BEFORE.search(text[max(0, match.start() - 40):match.start()]):
            continue
        numbers = segment_numbers(match.group("numbers"))
        if numbers and not numbers & scar_segments:
            found.append((match.start(), match.end(), match.group(0)))
    return sorted(found)


def stated_transmural(text: str) -> list[tuple[int, int, str]]:
    """(start, end, words) of each "transmural" / "predominantly transmural" the text states (not "non-transmural",
    "no transmural", "subendocardial or transmural")."""
    return [(m.start(), m.end(), m.group(0)) for m in _TRANSMURAL.finditer(text)
            if not _TRANSMURAL_NEGATED.search(text[max(0, m.start() - 40):m.start()])]


def moderate_unsupported(facts: NodeFacts) -> bool:
    """Whether a "moderate" scar is unsupported but not contradicted: %LGE under SMALL_EXTENT_MAX_PERCENT with the
    large-burden flag no, yet within the model's %LGE mean absolute error of it (or that error unknown); contradiction
    refuses the report where it lies further under."""
    return facts.lge_measured and facts.large_burden is False and facts.lge_percent is not None \
        and facts.lge_percent < SMALL_EXTENT_MAX_PERCENT \
        and (facts.lge_mae is None or facts.lge_percent >= SMALL_EXTENT_MAX_PERCENT - facts.lge_mae)


def stated_moderate(text: str) -> list[tuple[int, int, str]]:
    """(start, end, word) of each "moderate" / "moderately sized" / "mittelgroß" that qualifies a scar (_EXTENT)."""
    found = []
    for match in _EXTENT.finditer(text):
        group = next(g for g in (1, 2, 3) if match.group(g))
        if match.group(group).lower().startswith(("moderate", "mittelgro")):
            found.append((match.start(group), match.end(group), match.group(group)))
    return found


def stated_large(text: str) -> list[tuple[int, int, str]]:
    """(start, end, word) of each "large" / "extensive" / "massive" / "ausgedehnt" ... that qualifies a scar
    (_EXTENT: the words read as a "large" extent claim)."""
    found = []
    for match in _EXTENT.finditer(text):
        group = next(g for g in (1, 2, 3) if match.group(g))
        if not match.group(group).lower().startswith(("small", "minor", "limited", "tiny", "klein", "moderate",
                                                      "mittelgro")):
            found.append((match.start(group), match.end(group), match.group(group)))
    return found


def unjudged_points(facts: NodeFacts) -> frozenset[str]:
    """The size and wall-thickness claim points ("lv_size", "rv_size", "hypertrophy") the node does not judge for
    this study because the adult ranges are withheld (a child) and the value is not beyond any normal one: a report's
    statement on them would be offered unchecked (fitting_text takes it out). Empty for an adult (an adult's unknown
    size, a flag within the model's error, keeps its text) and without cine numbers."""
    if facts.adult_ranges_applied or not facts.cine_measured:
        return frozenset()
    return frozenset(point for point, value in (("lv_size", facts.lv_dilated), ("rv_size", facts.rv_dilated),
                                                ("hypertrophy", facts.hypertrophy)) if value is None)


def _part_points(part: str) -> set[str]:
    """The size / wall-thickness points a comma-separated part of a sentence may state: its own ventricle's size
    where it names one ventricle, both sizes where it names none or both."""
    points = set()
    if _SIZE_NORMAL.search(part) or _SIZE_DILATED.search(part):
        sides = {side for _, side in _named_ventricles(part)}
        points |= {f"{sides.pop()}_size"} if len(sides) == 1 and not _BI_TERM.search(part) else {"lv_size", "rv_size"}
    if _HYPERTROPHY.search(part) or _HYPERTROPHY_ABSENT.search(part):
        points.add("hypertrophy")
    return points


def without_points(sentence: str, points: frozenset[str]) -> str:
    """The sentence without its comma-separated parts that state any of `points` (_part_points: "Non-dilated LV,
    severely reduced global systolic function." -> "Severely reduced global systolic function."), or "" where
    nothing is left or what is left would claim something the sentence did not (a grade cut off from its ventricle:
    "The RV is of normal size, mildly reduced function" -> nothing)."""
    original = set(sentence_claims(sentence))
    end = sentence[-1] if sentence[-1:] in ".!?;" else ""
    kept = [part.strip() for part in sentence.rstrip(".!?; ").split(",") if not _part_points(part) & points]
    kept = [part for part in kept if part]
    if not kept:
        return ""
    text = ", ".join(kept).rstrip(".!?; ") + end
    text = text[0].upper() + text[1:]
    claims = set(sentence_claims(text))
    if not claims <= original or {point for point, _ in claims} & points:
        return ""
    return text


def _blank_spans(text: str, spans: list[tuple[int, int, str]]) -> str:
    """The text with each (start, end) span replaced by BLANK (overlapping spans merged)."""
    out, last = [], 0
    for start, end, _ in sorted(spans):
        if start < last:
            start = last
        if end <= start:
            continue
        out += [text[last:start], BLANK]
        last = end
    return "".join(out) + text[last:]


def _ef_contradicts(grade: str, ef: float | None, judged: bool, bands: dict) -> bool:
    if ef is None or grade not in bands:
        return False
    low, high = bands[grade]
    if not judged and grade in ("normal", "reduced"):
        return False  # the node itself does not say which side of the limit the EF lies
    return not (low <= ef < high)


def contradiction(claim: tuple[str, object], facts: NodeFacts) -> str | None:
    """Why a claim contradicts what the node measured ("LV function", "LGE extent" ...), or None."""
    point, value = claim
    if point in ("lge", "normal_study") and facts.lge_presence_uncertain:
        return "LGE presence uncertain"  # scar or no scar: either would state what the node cannot tell
    if point == "lge" and facts.significant_lge is not None and value != facts.significant_lge:
        return "LGE"
    # no scar where the node states no absence (the slices present only, a dark-blood LGE, a small field, no AHA
    # segments: lge_presence significant null)
    if facts.lge_measured and facts.significant_lge is None and (claim == ("lge", False) or point == "normal_study"):
        return "LGE absence not stated"
    if point == "extent" and facts.lge_measured:
        if value == "large" and (facts.large_burden is False or facts.significant_lge is False
                                 or facts.large_excluded):
            return "LGE extent"
        if value in ("small", "moderate") and facts.large_burden is True:
            return "LGE extent"
        if value == "small" and facts.lge_percent is not None and facts.lge_percent >= SMALL_EXTENT_MAX_PERCENT:
            return "LGE extent"
        # "moderate" on a scar the node measures as small: its %LGE under 10 % by more than the model's mean absolute
        # error (a heart read at 8 % can be 12 % to the expert), its large-burden flag stated: no
        if value == "moderate" and facts.large_burden is False and facts.lge_percent is not None \
                and facts.lge_mae is not None and facts.lge_percent < SMALL_EXTENT_MAX_PERCENT - facts.lge_mae:
            return "LGE extent"
    if point == "mvo" and facts.mvo is not None and value != facts.mvo:
        return "MVO"
    if point == "lv_function" and _ef_contradicts(value, facts.lv_ef, facts.lv_ef_judged, LV_GRADE_EF):
        return "LV function"
    if point == "rv_function" and _ef_contradicts(value, facts.rv_ef, facts.rv_ef_judged, RV_GRADE_EF):
        return "RV function"
    if point in ("lv_size", "rv_size"):
        dilated = facts.lv_dilated if point == "lv_size" else facts.rv_dilated
        if dilated is not None and (value == "dilated") != dilated:
            return "LV size" if point == "lv_size" else "RV size"
    if point == "normal_study" and (facts.significant_lge is True or facts.lv_dilated is True or facts.hypertrophy
                                    or _ef_contradicts("normal", facts.lv_ef, facts.lv_ef_judged, LV_GRADE_EF)):
        return "normal study"
    if point == "hypertrophy" and facts.hypertrophy is not None and value != facts.hypertrophy:
        return "hypertrophy"
    return None


def contradicted(claims, facts: NodeFacts) -> tuple[str, ...]:
    """The points on which a report's claims contradict the node's facts, in a fixed order."""
    found = {contradiction(claim, facts) for claim in claims} - {None}
    return tuple(point for point in CONTRADICTION_POINTS if point in found)


CONTRADICTION_POINTS = ("LGE", "LGE presence uncertain", "LGE absence not stated", "LGE extent", "MVO", "large burden", "normal study",
                        "LV function", "LV size", "RV function", "RV size", "hypertrophy")

#: what fitting_text's note calls each point unjudged_points gives
UNJUDGED_WORDS = {"hypertrophy": "wall thickness", "lv_size": "LV size", "rv_size": "RV size"}
_LGE_POINTS = ("lge", "extent", "mvo", "wall")
_CINE_POINTS = ("lv_function", "rv_function", "lv_size", "rv_size", "hypertrophy")


def fitting_text(text: str, facts: NodeFacts) -> tuple[str, list[str]]:
    """The report text with what the node did not measure or state for this study taken out, and what was taken
    out: a sentence whose grade or size cannot be tied to one ventricle (UNCHECKED); a sentence on LGE / MVO / a wall
    when no LGE was measured, on function / size / wall thickness when no cine
    was; a sentence stating MVO where the node does not state MVO presence (its "with microvascular obstruction"
    clause only, where the rest of the sentence stands alone); wall and territory names (and AHA segment lists)
    blanked (BLANK) in every sentence but those on function, size and wall thickness where the node assigned no AHA
    segments to the LGE, and, where it assigned them, each such name whose segments hold no scar in the node's AHA
    result (unsupported_walls: "septal" where only anterior segments hold scar); "transmural" / "predominantly
    transmural" blanked where no scarred segment's scarred part is over 50 % transmural (stated_transmural); an
    extent "moderate" blanked where %LGE is under 10 % but within the model's error of it (moderate_unsupported);
    where the large-burden flag is not given (`burden_withheld`: a child, %LGE within the model's error of the
    cut-off, a stack or input the flag is withheld on), a sentence stating a large burden as a threshold ("Scar burden
    of 15% or more") taken out and a "large" / "extensive" scar word blanked: the node withheld that verdict, and a
    suggestion must not restate it; for a child (the adult ranges withheld, unjudged_points) the parts of a sentence
    stating the LV / RV size or the wall thickness the node does not judge taken out (without_points).
    Other
    contradictions are not handled here: a report that contradicts
    the node is not offered at all (contradicted)."""
    kept, removed = [], set()
    pending = ""  # the label ("Impression: ") of a dropped sentence, given to the next sentence kept in its section
    for sentence in split_sentences(text):
        body, points = sentence.text, {point for point, _ in sentence.claims}
        label = sentence.label or pending
        pending = ""
        if UNCHECKED in sentence.claims:
            removed.add("statements the check cannot tie to one ventricle")
            body = ""
        elif points & set(_LGE_POINTS) and not facts.lge_measured:
            removed.add("LGE statements (no LGE measured in this study)")
            body = ""
        elif points & set(_CINE_POINTS) and not facts.cine_measured:
            removed.add("function statements (no cine measured in this study)")
            body = ""
        elif "mvo" in points and not facts.mvo_stated:
            stripped = _MVO_CLAUSE.sub("", body)
            removed.add("MVO statements (this study's MVO presence is not stated)")
            body = "" if _MVO.search(stripped) else stripped
        if body and not facts.segments_assigned and not points & set(_CINE_POINTS) and _WALL.search(body):
            body = _WALL.sub(BLANK, body)
            removed.add("wall / territory names (no AHA segments assigned in this study)")
        elif body and facts.scar_segments is not None and not points & set(_CINE_POINTS):
            walls = unsupported_walls(body, facts.scar_segments)
            if walls:
                body = _blank_spans(body, walls)
                removed.add("wall / territory names where this study's AHA segments hold no scar ("
                            + ", ".join(dict.fromkeys(w.lower() for _, _, w in walls)) + ")")
        if body and facts.transmural is False and not points & set(_CINE_POINTS):
            transmural = stated_transmural(body)
            if transmural:
                body = _blank_spans(body, transmural)
                removed.add("'transmural' (no scarred part of an AHA segment of this study is over 50 % transmural)")
        unjudged = unjudged_points(facts) & points
        if body and unjudged:
            body = without_points(body, unjudged)
            removed.update(f"{UNJUDGED_WORDS[point]} statements (adult reference ranges not applied: judged against "
                           "paediatric references, which the node does not apply)" for point in unjudged)
        if body and facts.burden_withheld and ("extent", "large") in sentence.claims:
            body = "" if stated_large_burden(body) else _blank_spans(body, stated_large(body))
            removed.add(f"large-burden statements (this study's large-burden flag is not given: "
                        f"{facts.burden_withheld.split(';')[0]})")
        if body and "extent" in points and moderate_unsupported(facts):
            moderate = stated_moderate(body)
            if moderate:
                body = _blank_spans(body, moderate)
                removed.add(f"'moderate' (this study's %LGE {facts.lge_percent:g} % is under "
                            f"{SMALL_EXTENT_MAX_PERCENT:g} %, within the model's error of it)")
        if body.strip():
            kept.append(label + body)
        else:
            pending = label
    return " ".join(kept).strip(), sorted(removed)
