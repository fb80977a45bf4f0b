"""Reservations said on the web: in the response that served an image, and in files of its site.

* **Response headers.** ``X-Robots-Tag`` with ``noai``, ``noimageai`` or ``noml`` (the directives
  DeviantArt introduced and Spawning's tools honour), for every crawler or for one
  (``X-Robots-Tag: GPTBot: noai``); TDMRep (W3C Community Group final report, 2024) ``tdm-reservation: 1``,
  with ``tdm-policy: URL`` when given.
* **Site files.** TDMRep ``/.well-known/tdmrep.json`` (a list of ``{"location", "tdm-reservation",
  "tdm-policy"}``: the first rule whose location matches the path decides); ``robots.txt`` rules that
  disallow the image's path to an AI crawler (:data:`AI_AGENTS`) or to every crawler (``*``); Spawning's
  ``ai.txt`` (robots.txt syntax, every rule about AI use).

Everything here parses text already fetched; :mod:`matcher.ingest.sites` fetches it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from .records import Found, Reservation

__all__ = ["AI_AGENTS", "AI_DIRECTIVES", "WANTED_HEADERS", "from_headers", "RobotsFile", "TdmRep"]

#: Crawlers that collect data for AI training, as their operators name them in robots.txt.
AI_AGENTS = ("GPTBot", "CCBot", "Google-Extended", "anthropic-ai", "ClaudeBot", "Claude-Web", "Applebot-Extended",
             "Bytespider", "cohere-ai", "cohere-training-data-crawler", "Meta-ExternalAgent", "FacebookBot",
             "PerplexityBot", "Diffbot", "Omgilibot", "img2dataset", "ImagesiftBot", "AI2Bot", "Timpibot", "YouBot",
             "Amazonbot", "PetalBot", "Kangaroo Bot")
#: X-Robots-Tag directives that reserve AI use.
AI_DIRECTIVES = ("noai", "noimageai", "noml")
#: The response headers read (lower case).
WANTED_HEADERS = ("x-robots-tag", "tdm-reservation", "tdm-policy")
_VALUED = {"unavailable_after", "max-snippet", "max-image-preview", "max-video-preview"}
_AGENT = re.compile(r"^\s*([A-Za-z][\w.-]*(?: [A-Za-z][\w.-]*)?)\s*:\s*(.*)$")


def _x_robots(values: Iterable[str]) -> list[Reservation]:
    out = []
    for value in values:
        agent, rest = None, value
        m = _AGENT.match(value)
        if m and m.group(1).lower() not in _VALUED:
            agent, rest = m.group(1), m.group(2)
        for token in rest.split(","):
            d = token.strip().lower()
            if d in AI_DIRECTIVES:
                r = Reservation("headers", "x-robots-tag", d, f"for {agent}" if agent else "")
                if r not in out:
                    out.append(r)
    return out


def from_headers(headers: Mapping[str, list[str]], url: str = "") -> Found:
    """The reservations in a response's headers (``{lower-case name: [values]}``)."""
    found = Found()
    found.reservations += _x_robots(headers.get("x-robots-tag") or ())
    policy = next((p.strip() for p in headers.get("tdm-policy") or () if p.strip()), "")
    for raw in headers.get("tdm-reservation") or ():
        v = raw.strip()
        if v == "1":
            found.reservations.append(Reservation("headers", "tdm-reservation", "1", f"policy {policy}" if policy else ""))
        elif v != "0":
            found.notes.append(f"headers: tdm-reservation {v[:40]!r} is neither 0 nor 1")
    return found


# --- robots.txt and ai.txt -------------------------------------------------------------------------------
def _pattern(p: str) -> re.Pattern:
    """A robots.txt path pattern (RFC 9309: ``*`` any characters, a final ``$`` the end) as a regex."""
    end = p.endswith("$")
    body = re.escape(p[:-1] if end else p).replace(r"\*", ".*")
    return re.compile(body + ("$" if end else ""))


@dataclass
class _Group:
    agents: list[str] = field(default_factory=list)
    rules: list[tuple[bool, str]] = field(default_factory=list)  # (allow?, pattern)


@dataclass
class RobotsFile:
    """A parsed robots.txt (or ai.txt): its groups of rules, by user agent."""

    groups: list[_Group] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> "RobotsFile":
        groups: list[_Group] = []
        current: _Group | None = None
        last_was_agent = False
        for line in text.splitlines()[:20000]:
            line = line.split("#", 1)[0].strip()
            if ":" not in line:
                continue
            key, value = (s.strip() for s in line.split(":", 1))
            key = key.lower()
            if key in ("user-agent", "useragent"):
                if current is None or not last_was_agent:
                    current = _Group()
                    groups.append(current)
                current.agents.append(value.lower())
                last_was_agent = True
            elif key in ("allow", "disallow") and current is not None:
                last_was_agent = False
                if value:  # an empty Disallow allows everything
                    current.rules.append((key == "allow", value))
            else:
                last_was_agent = False
        return cls(groups)

    def group_for(self, agent: str, *, exact: bool) -> _Group | None:
        """The rules for ``agent``: its own group (RFC 9309: matched case-insensitively), else ``*``'s
        unless ``exact``. Several groups naming the agent are merged."""
        a = agent.lower()
        mine = [g for g in self.groups if a in g.agents]
        if not mine and not exact:
            mine = [g for g in self.groups if "*" in g.agents]
        if not mine:
            return None
        return _Group([a], [r for g in mine for r in g.rules])

    @staticmethod
    def decide(group: _Group, path: str) -> str | None:
        """The Disallow pattern that refuses ``path`` (longest match wins; Allow wins a tie), or None."""
        best: tuple[int, bool, str] | None = None
        for allow, pat in group.rules:
            p = pat if pat.startswith(("/", "*")) else "/" + pat
            if _pattern(p).match(path):
                key = (len(pat), allow, pat)
                if best is None or key[:2] > best[:2]:
                    best = key
        return None if best is None or best[1] else best[2]


def robots_reservations(robots: RobotsFile, path: str, where: str, rule: str = "robots.txt") -> list[Reservation]:
    """What a robots.txt (``rule`` "robots.txt") or ai.txt ("ai.txt") refuses on ``path``: one reservation
    per AI crawler that has its own group refusing it, and one for ``*`` (every crawler)."""
    out = []
    agents = ("*",) if rule == "ai.txt" else AI_AGENTS
    for agent in agents:
        g = robots.group_for(agent, exact=True)
        if g is None:
            continue
        pat = RobotsFile.decide(g, path)
        if pat is not None:
            out.append(Reservation("site", rule, f"Disallow: {pat} ({agent if agent != '*' else 'every agent'})", where))
    if rule == "robots.txt":
        g = robots.group_for("*", exact=True)
        pat = RobotsFile.decide(g, path) if g else None
        if pat is not None:
            out.append(Reservation("site", rule, f"Disallow: {pat} (every crawler)", where))
    elif not out:  # ai.txt rules for named agents count too: the file is about AI use only
        for g in robots.groups:
            pat = RobotsFile.decide(g, path)
            if pat is not None:
                out.append(Reservation("site", rule, f"Disallow: {pat} ({', '.join(g.agents)})", where))
                break
    return out


# --- TDMRep's /.well-known/tdmrep.json -------------------------------------------------------------------
@dataclass
class TdmRep:
    """A parsed ``tdmrep.json``: ``(location pattern, reserved?, policy)`` in file order."""

    rules: list[tuple[str, bool, str]] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> "TdmRep":
        """Raises ValueError when the file is not a TDMRep list of rules."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"not JSON ({e.msg} at line {e.lineno})") from None
        if not isinstance(data, list):
            raise ValueError("not a list of rules")
        rules = []
        for i, r in enumerate(data):
            if not isinstance(r, dict) or not isinstance(r.get("location"), str):
                raise ValueError(f"rule {i} has no location")
            res = r.get("tdm-reservation")
            if res not in (0, 1, "0", "1"):
                raise ValueError(f"rule {i}: tdm-reservation must be 0 or 1")
            rules.append((r["location"], str(res) == "1", str(r.get("tdm-policy") or "")))
        return cls(rules)

    def decide(self, path: str) -> tuple[str, bool, str] | None:
        for loc, reserved, policy in self.rules:
            p = loc if loc.startswith(("/", "*")) else "/" + loc
            if _pattern(p).match(path):
                return loc, reserved, policy
        return None
