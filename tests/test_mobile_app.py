"""Static checks of the Flutter app in ``mobile_app/``; the Flutter SDK is not needed.

The app cannot be compiled here, so this catches what can be caught without it:

* every Dart file parses (tree-sitter-dart), and its imports resolve to a file or to
  a package declared in ``pubspec.yaml``;
* the app's protocol models (``mobile_app/lib/api/``) name every message type and
  field of ``docs/protocol.md``, and the document agrees with the server's own
  ``CLIENT_MESSAGES``/``SERVER_MESSAGES``;
* the Android manifest and the iOS Info.plist declare what location sharing and
  join links need.
"""

from __future__ import annotations

import plistlib
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import tree_sitter
import tree_sitter_dart

from locshare.proto._messages import CLIENT_MESSAGES, SERVER_MESSAGES

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "mobile_app"
PROTOCOL_MD = ROOT / "docs" / "protocol.md"
# Output of `flutter pub get`/`flutter build`/`pod install`: not ours to check.
GENERATED_DIRS = {".dart_tool", "build", "Pods", ".symlinks", "ephemeral"}
SECTIONS = {"Client to server": "client", "Server to client": "server"}
ANDROID = "{http://schemas.android.com/apk/res/android}"


def dart_files(*parts: str) -> list[Path]:
    base = APP.joinpath(*parts)
    return sorted(
        path
        for path in base.rglob("*.dart")
        if not GENERATED_DIRS.intersection(path.relative_to(APP).parts)
    )


@pytest.fixture(scope="module")
def parser() -> tree_sitter.Parser:
    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_dart.language()))


def parse(parser: tree_sitter.Parser, path: Path) -> tree_sitter.Tree:
    return parser.parse(path.read_bytes())


def syntax_problems(tree: tree_sitter.Tree) -> list[str]:
    """Every ERROR and MISSING node, as "line:column: what"."""
    problems = []
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if node.is_error or node.is_missing:
            row, column = node.start_point
            what = f"missing {node.type!r}" if node.is_missing else "syntax error"
            problems.append((row + 1, column + 1, what))
        elif node.has_error:  # only subtrees with a problem are worth walking
            stack.extend(node.children)
    return [f"{row}:{column}: {what}" for row, column, what in sorted(problems)]


# --- Dart syntax --------------------------------------------------------------------------
def test_the_app_is_there() -> None:
    names = {path.relative_to(APP).as_posix() for path in dart_files()}
    for required in ("lib/main.dart", "lib/app.dart", "lib/config.dart", "lib/api/protocol.dart"):
        assert required in names
    assert len(dart_files("test")) >= 5


def test_the_syntax_check_can_fail(parser: tree_sitter.Parser) -> None:
    broken = parser.parse(b"class A {\n  int f() => 1\n}\nvoid g() { h(; }\n")
    assert [p.split(":")[0] for p in syntax_problems(broken)] == ["2", "4"]
    assert (
        syntax_problems(parser.parse(b"sealed class A {}\nfinal b = switch (1) { _ => 2 };\n"))
        == []
    )


def test_every_dart_file_parses(parser: tree_sitter.Parser) -> None:
    problems = [
        f"{path.relative_to(ROOT)}:{problem}"
        for path in dart_files()
        for problem in syntax_problems(parse(parser, path))
    ]
    assert not problems, "Dart syntax errors:\n" + "\n".join(problems)


def declared_packages() -> set[str]:
    """Package names under ``dependencies``/``dev_dependencies`` of pubspec.yaml."""
    packages, section = set(), None
    for line in (APP / "pubspec.yaml").read_text().splitlines():
        if line and not line[0].isspace():
            section = line.split(":")[0]
        elif section in ("dependencies", "dev_dependencies") and (
            match := re.match(r"^  ([a-z_][a-z0-9_]*):", line)
        ):
            packages.add(match.group(1))
    return packages


def test_imports_resolve() -> None:
    packages = declared_packages()
    directive = re.compile(r"^(?:import|export) '([^']+)'", re.MULTILINE)
    unresolved = []
    for path in dart_files():
        for target in directive.findall(path.read_text()):
            if target.startswith("dart:"):
                continue
            if target.startswith("package:locshare_app/"):
                ok = (APP / "lib" / target.removeprefix("package:locshare_app/")).is_file()
            elif target.startswith("package:"):
                ok = target.removeprefix("package:").split("/")[0] in packages
            else:
                ok = (path.parent / target).resolve().is_file()
            if not ok:
                unresolved.append(f"{path.relative_to(ROOT)}: {target}")
    assert not unresolved, "unresolved imports:\n" + "\n".join(unresolved)


def test_pubspec_pins_the_packages() -> None:
    pubspec = (APP / "pubspec.yaml").read_text()
    assert re.search(r"^name: locshare_app$", pubspec, re.MULTILINE)
    assert re.search(r"^  sdk: \">=3\.3\.0 <4\.0\.0\"$", pubspec, re.MULTILINE)
    for package in (
        "flutter_riverpod",
        "flutter_map",
        "latlong2",
        "geolocator",
        "web_socket_channel",
        "http",
        "app_links",
        "share_plus",
        "qr_flutter",
        "flutter_lints",
    ):
        assert re.search(rf"^  {package}: \^\d+\.\d+\.\d+$", pubspec, re.MULTILINE), package
    assert "package:flutter_lints/flutter.yaml" in (APP / "analysis_options.yaml").read_text()


# --- the protocol contract ----------------------------------------------------------------
@dataclass
class DocumentedMessage:
    direction: str
    tables: list[list[str]] = field(default_factory=list)  # field names, one list per table

    @property
    def fields(self) -> set[str]:
        return {name for table in self.tables for name in table}


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def parse_protocol(text: str) -> dict[str, DocumentedMessage]:
    """Message types (### headings under the two direction sections) and their fields
    (first column of the tables after each heading whose first header is ``field``)."""
    messages: dict[str, DocumentedMessage] = {}
    direction: str | None = None
    current: DocumentedMessage | None = None
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if line.startswith("## "):
            direction, current = SECTIONS.get(line[3:].strip()), None
        elif line.startswith("### ") and direction is not None:
            heading = re.fullmatch(r"### `([a-z_]+)`", line)
            assert heading, f"protocol.md:{i + 1}: a message heading looks like ### `name`"
            current = messages[heading.group(1)] = DocumentedMessage(direction)
        elif line.startswith("|"):
            start = i
            while i < len(lines) and lines[i].strip().startswith("|"):
                i += 1
            rows = [cells(row) for row in lines[start:i]]
            assert all(re.fullmatch(r":?-+:?", c) for c in rows[1]), f"protocol.md:{start + 2}"
            if current is not None and rows[0][0] == "field":
                names = []
                for offset, row in enumerate(rows[2:], start=start + 3):
                    name = re.fullmatch(r"`([a-z_]+)`", row[0])
                    assert name, f"protocol.md:{offset}: expected a `field` name, got {row[0]!r}"
                    names.append(name.group(1))
                current.tables.append(names)
            continue
        i += 1
    return messages


@pytest.fixture(scope="module")
def documented() -> dict[str, DocumentedMessage]:
    return parse_protocol(PROTOCOL_MD.read_text())


def test_protocol_parser_finds_the_contract(documented: dict[str, DocumentedMessage]) -> None:
    directions = {name: message.direction for name, message in documented.items()}
    for name in ("location_update", "viewport_size", "ping", "leave"):
        assert directions.get(name) == "client", name
    for name in ("session_state", "locations", "viewport", "session_ended", "error"):
        assert directions.get(name) == "server", name
    assert documented["location_update"].tables == [
        ["lat", "lng", "accuracy", "heading", "speed", "timestamp"]
    ]
    assert documented["ping"].tables == [["id"]]
    assert documented["leave"].tables == []
    # Sub-tables (*Session*, *Limits*, ...) belong to the message above them.
    session_state = documented["session_state"]
    assert len(session_state.tables) == 5  # itself, Session, You, Participant, Limits
    assert documented["locate_now"].tables == [] and documented["route_cleared"].tables == []
    assert {"max_participants", "joined_at", "stale", "update_interval_s"} <= session_state.fields
    assert {"west", "north", "lat", "lng", "zoom"} <= documented["viewport"].fields
    assert {"user_id", "accuracy", "timestamp"} <= documented["locations"].fields
    # Tables whose first column is not `field` (error codes, close codes) are not fields.
    assert documented["error"].tables == [["code", "message"]]
    assert "malformed_message" not in documented["error"].fields


def test_protocol_doc_matches_the_server(documented: dict[str, DocumentedMessage]) -> None:
    for direction, constants in (("client", CLIENT_MESSAGES), ("server", SERVER_MESSAGES)):
        in_doc = {name for name, message in documented.items() if message.direction == direction}
        assert in_doc == set(constants), direction
        for name, fields in constants.items():
            first_table = documented[name].tables[0] if documented[name].tables else []
            missing = set(fields) - set(first_table)
            assert not missing, f"{name}: {sorted(missing)} not in its table in protocol.md"


def dart_string_literals(parser: tree_sitter.Parser, paths: list[Path]) -> set[str]:
    """The values of plain (non-interpolated) string literals."""
    values = set()
    for path in paths:
        stack = [parse(parser, path).root_node]
        while stack:
            node = stack.pop()
            stack.extend(node.children)
            if node.type != "string_literal" or any(
                child.type == "template_substitution" for child in node.children
            ):
                continue
            text = node.text.decode() if node.text is not None else ""
            text = text[1:] if text[:1] in "rR" else text
            for quote in ("'''", '"""', "'", '"'):
                if len(text) >= 2 * len(quote) and text.startswith(quote) and text.endswith(quote):
                    values.add(text[len(quote) : -len(quote)])
                    break
    return values


def test_app_models_name_every_type_and_field(
    parser: tree_sitter.Parser, documented: dict[str, DocumentedMessage]
) -> None:
    api = dart_files("lib", "api")
    assert api, "mobile_app/lib/api/ has no Dart files"
    literals = dart_string_literals(parser, api)
    missing = [
        f"{message.direction} {name}: {what}"
        for name, message in sorted(documented.items())
        for what in [name, *sorted(message.fields)]
        if what not in literals
    ]
    assert not missing, "not named as a string literal in mobile_app/lib/api/:\n" + "\n".join(
        missing
    )


# --- platform declarations ----------------------------------------------------------------
def test_android_manifest() -> None:
    root = ET.parse(APP / "android/app/src/main/AndroidManifest.xml").getroot()
    permissions = {element.get(f"{ANDROID}name") for element in root.iter("uses-permission")}
    assert {
        f"android.permission.{name}"
        for name in (
            "INTERNET",
            "ACCESS_FINE_LOCATION",
            "ACCESS_COARSE_LOCATION",
            "ACCESS_BACKGROUND_LOCATION",
            "FOREGROUND_SERVICE",
            "FOREGROUND_SERVICE_LOCATION",
        )
    } <= permissions
    filters = []
    for intent_filter in root.iter("intent-filter"):
        actions = {a.get(f"{ANDROID}name") for a in intent_filter.iter("action")}
        for data in intent_filter.iter("data"):
            filters.append(
                (
                    data.get(f"{ANDROID}scheme"),
                    data.get(f"{ANDROID}host"),
                    data.get(f"{ANDROID}pathPrefix"),
                    intent_filter.get(f"{ANDROID}autoVerify"),
                    "android.intent.action.VIEW" in actions,
                )
            )
    assert any(f[0] == "locshare" and f[1] == "join" and f[4] for f in filters), filters
    assert any(f[0] == "https" and f[2] == "/join/" and f[3] == "true" and f[4] for f in filters)
    gradle = (APP / "android/app/build.gradle").read_text()
    assert re.search(r"\bminSdk(?:Version)?\s*=?\s*26\b", gradle)


def test_ios_info_plist() -> None:
    with (APP / "ios/Runner/Info.plist").open("rb") as file:
        info = plistlib.load(file)
    for key in (
        "NSLocationWhenInUseUsageDescription",
        "NSLocationAlwaysAndWhenInUseUsageDescription",
    ):
        assert isinstance(info.get(key), str) and len(info[key]) > 20, key
    assert "location" in info["UIBackgroundModes"]
    schemes = {s for url_type in info["CFBundleURLTypes"] for s in url_type["CFBundleURLSchemes"]}
    assert "locshare" in schemes
    with (APP / "ios/Runner/Runner.entitlements").open("rb") as file:
        domains = plistlib.load(file)["com.apple.developer.associated-domains"]
    assert domains and all(d.startswith("applinks:") for d in domains)
    assert re.search(r"^platform :ios, '12\.0'$", (APP / "ios/Podfile").read_text(), re.MULTILINE)
