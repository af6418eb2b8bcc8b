"""A strict reader of the Prometheus text exposition format (version 0.0.4), for tests.

parse(text) -> Metrics, or ValueError naming the line. Stricter than Prometheus itself where
the agent promises more: every family has one HELP and one TYPE before its first sample, a
family's lines are contiguous, no series appears twice, a counter's samples are its own name,
a histogram's are _bucket (with le, cumulative, ending in +Inf), _sum and _count."""

import math
import re

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


class Metrics:
    def __init__(self):
        self.families = {}   # name -> {"type", "help", "series": {(sample name, labels): value}}
        self.series = {}     # (sample name, ((label, value), ...) sorted) -> value

    def get(self, name, default=None, **labels):
        """The value of series name{labels} (exactly those labels), or default."""
        return self.series.get((name, tuple(sorted(labels.items()))), default)

    def values(self, name):
        """{labels tuple: value} of every series of sample name."""
        return {lab: v for (n, lab), v in self.series.items() if n == name}


def _value(s, where):
    if s in ("+Inf", "Inf"):
        return math.inf
    if s == "-Inf":
        return -math.inf
    if s == "NaN":
        return math.nan
    try:
        return float(s)
    except ValueError:
        raise ValueError(f"{where}: value {s!r} is not a float") from None


def _labels(s, i, where):
    """Parses {a="b",...} at s[i] == '{'; (labels dict, index after '}')."""
    out = {}
    i += 1
    while True:
        if s.startswith("}", i):
            return out, i + 1
        m = LABEL.match(s, i)
        if not m:
            raise ValueError(f"{where}: bad label name at column {i + 1}")
        name = m.group(0)
        i = m.end()
        if not s.startswith('="', i):
            raise ValueError(f"{where}: label {name}: expected =\"")
        i += 2
        val = []
        while True:
            if i >= len(s):
                raise ValueError(f"{where}: label {name}: unterminated value")
            c = s[i]
            if c == "\\":
                esc = s[i + 1:i + 2]
                if esc not in ("\\", '"', "n"):
                    raise ValueError(f"{where}: label {name}: bad escape \\{esc}")
                val.append("\n" if esc == "n" else esc)
                i += 2
            elif c == '"':
                i += 1
                break
            elif c == "\n":
                raise ValueError(f"{where}: label {name}: raw newline")
            else:
                val.append(c)
                i += 1
        if name in out:
            raise ValueError(f"{where}: label {name} twice")
        out[name] = "".join(val)
        if s.startswith(",", i):
            i += 1
        elif not s.startswith("}", i):
            raise ValueError(f"{where}: expected , or }} after label {name}")


def _family_of(sample, families):
    if sample in families:
        return sample
    for suffix in ("_bucket", "_sum", "_count"):
        if sample.endswith(suffix) and sample[:-len(suffix)] in families:
            return sample[:-len(suffix)]
    return None


def parse(text):
    if text and not text.endswith("\n"):
        raise ValueError("the text does not end with a newline")
    m = Metrics()
    fam = m.families
    current = None
    done = set()          # families whose lines have ended
    for n, line in enumerate(text.split("\n")[:-1] if text else [], 1):
        where = f"line {n}"
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                name = parts[2]
                if not NAME.fullmatch(name):
                    raise ValueError(f"{where}: bad metric name {name!r}")
                if name != current:
                    if name in done or name in fam and fam[name]["series"]:
                        raise ValueError(f"{where}: family {name} is not contiguous")
                    if current:
                        done.add(current)
                    current = name
                f = fam.setdefault(name, {"type": None, "help": None, "series": {}})
                if f["series"]:
                    raise ValueError(f"{where}: {parts[1]} of {name} after its samples")
                if parts[1] == "HELP":
                    if f["help"] is not None:
                        raise ValueError(f"{where}: second HELP for {name}")
                    h = parts[3] if len(parts) > 3 else ""
                    if re.search(r"\\[^\\n]", h.replace("\\\\", "")):
                        raise ValueError(f"{where}: HELP of {name}: bad escape")
                    f["help"] = h
                else:
                    if f["type"] is not None:
                        raise ValueError(f"{where}: second TYPE for {name}")
                    if len(parts) != 4 or parts[3] not in TYPES:
                        raise ValueError(f"{where}: TYPE of {name}: {parts[3:]!r} is not one of {TYPES}")
                    f["type"] = parts[3]
            continue
        mm = NAME.match(line)
        if not mm:
            raise ValueError(f"{where}: bad sample name in {line[:80]!r}")
        sample = mm.group(0)
        i = mm.end()
        labels = {}
        if line.startswith("{", i):
            labels, i = _labels(line, i, where)
        rest = line[i:]
        if not rest.startswith(" "):
            raise ValueError(f"{where}: expected a space before the value of {sample}")
        fields = rest.split()
        if len(fields) not in (1, 2):
            raise ValueError(f"{where}: expected a value (and a timestamp) after {sample}")
        v = _value(fields[0], where)
        if len(fields) == 2 and not re.fullmatch(r"-?[0-9]+", fields[1]):
            raise ValueError(f"{where}: bad timestamp {fields[1]!r}")
        family = _family_of(sample, fam)
        if family is None:
            raise ValueError(f"{where}: sample {sample} has no HELP/TYPE")
        f = fam[family]
        if family != current:
            raise ValueError(f"{where}: sample {sample} outside its family's lines")
        if f["help"] is None or f["type"] is None:
            raise ValueError(f"{where}: family {family} lacks HELP or TYPE")
        if f["type"] in ("counter", "gauge", "untyped") and sample != family:
            raise ValueError(f"{where}: a {f['type']}'s sample {sample} is not named {family}")
        if f["type"] == "counter" and not (v >= 0):
            raise ValueError(f"{where}: counter {sample} is {v}")
        if f["type"] == "histogram":
            if sample == family:
                raise ValueError(f"{where}: histogram {family}: bare sample")
            if sample.endswith("_bucket") and "le" not in labels:
                raise ValueError(f"{where}: histogram bucket without le")
        key = (sample, tuple(sorted(labels.items())))
        if key in m.series:
            raise ValueError(f"{where}: series {sample}{labels} twice")
        m.series[key] = v
        f["series"][key] = v
    for name, f in fam.items():
        if f["type"] is None or f["help"] is None:
            raise ValueError(f"family {name} lacks HELP or TYPE")
        if f["type"] == "histogram":
            _check_histogram(name, f["series"])
    return m


def _check_histogram(name, series):
    groups = {}
    for (sample, labels), v in series.items():
        base = tuple(x for x in labels if x[0] != "le")
        g = groups.setdefault(base, {"buckets": [], "sum": None, "count": None})
        if sample == name + "_bucket":
            le = dict(labels)["le"]
            g["buckets"].append((math.inf if le == "+Inf" else float(le), v))
        elif sample == name + "_sum":
            g["sum"] = v
        elif sample == name + "_count":
            g["count"] = v
    for base, g in groups.items():
        b = sorted(g["buckets"])
        if not b or b[-1][0] != math.inf or g["count"] is None or g["sum"] is None:
            raise ValueError(f"histogram {name}{dict(base)}: needs buckets up to +Inf, _sum and _count")
        if any(b[i][1] > b[i + 1][1] for i in range(len(b) - 1)) or b[-1][1] != g["count"]:
            raise ValueError(f"histogram {name}{dict(base)}: buckets not cumulative or +Inf != _count")
