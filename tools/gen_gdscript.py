"""Generates the Godot addon's GDScript protobuf code (NpcProto) from protos/.

Run: python tools/gen_gdscript.py [--check]. protoc (grpc_tools) compiles the protos into a FileDescriptorSet with
source info; this script walks that descriptor, never the .proto text. It emits, for the RPCs the addon calls and
every message they reach: typed GDScript inner classes with to_bytes/from_bytes (binary wire format, byte-identical
to Python protobuf for the same message), to_dict/from_dict (for save games), the enums, and the RPC paths.
With --check it exits 1 when the committed file differs (tests/godot/test_godot_static.py runs that).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import descriptor_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT = ROOT / "godot_addon" / "addons" / "npc_dialogue" / "npc_proto.gd"
#: The RPCs the addon calls. Their request/response messages, and every message those reach, are generated.
METHODS = (
    "npcserver.api.v1.ConversationService/Talk",
    "npcserver.api.v1.ConversationService/GetConversation",
    "npcserver.api.v1.ConversationService/ResetConversation",
    "npcserver.api.v1.ConversationService/ExportConversation",
    "npcserver.api.v1.ConversationService/ImportConversation",
    "npcserver.api.v1.PresetService/ListPresets",
    "npcserver.api.v1.KnowledgeService/AddMemory",
    "npcserver.api.v1.KnowledgeService/ListMemories",
    "npcserver.api.v1.KnowledgeService/DeleteMemory",
    "npcserver.api.v1.KnowledgeService/GetSummary",
    "npcserver.api.v1.KnowledgeService/SetSummary",
)
LINE_LENGTH = 100
FDP = descriptor_pb2.FieldDescriptorProto


@dataclass(frozen=True)
class Scalar:
    """How one protobuf scalar type maps to GDScript."""

    gd_type: str
    default: str
    wire_type: int
    put: str  # NpcWire.Writer method
    read: str  # NpcWire.Reader method
    set_test: str  # implicit-presence test; {v} is the value
    coerce: str  # from_dict conversion; {v} is the value


SCALARS: dict[int, Scalar] = {
    FDP.TYPE_DOUBLE: Scalar("float", "0.0", 1, "put_double", "read_double", "NpcWire.is_set_float({v})", "float({v})"),
    FDP.TYPE_FLOAT: Scalar("float", "0.0", 5, "put_float", "read_float", "NpcWire.is_set_float({v})", "float({v})"),
    FDP.TYPE_INT64: Scalar("int", "0", 0, "put_varint", "read_varint", "{v} != 0", "int({v})"),
    FDP.TYPE_UINT64: Scalar("int", "0", 0, "put_varint", "read_varint", "{v} != 0", "int({v})"),
    FDP.TYPE_INT32: Scalar("int", "0", 0, "put_varint", "read_int32", "{v} != 0", "int({v})"),
    FDP.TYPE_UINT32: Scalar("int", "0", 0, "put_varint", "read_uint32", "{v} != 0", "int({v})"),
    FDP.TYPE_ENUM: Scalar("int", "0", 0, "put_varint", "read_int32", "{v} != 0", "int({v})"),
    FDP.TYPE_BOOL: Scalar("bool", "false", 0, "put_bool", "read_bool", "{v}", "bool({v})"),
    FDP.TYPE_STRING: Scalar("String", '""', 2, "put_string", "read_string", "not {v}.is_empty()", "str({v})"),
    FDP.TYPE_BYTES: Scalar(
        "PackedByteArray", "PackedByteArray()", 2, "put_bytes", "read_bytes", "not {v}.is_empty()",
        "PackedByteArray({v})",
    ),
}  # fmt: skip
#: GDScript words a field may not be named; such a field gets a trailing underscore.
RESERVED = frozenset(
    [
        "if",
        "elif",
        "else",
        "for",
        "while",
        "match",
        "when",
        "break",
        "continue",
        "pass",
        "return",
        "class",
        "class_name",
        "extends",
        "is",
        "in",
        "as",
        "self",
        "signal",
        "func",
        "static",
        "const",
        "enum",
        "var",
        "breakpoint",
        "preload",
        "await",
        "yield",
        "assert",
        "void",
        "not",
        "and",
        "or",
        "super",
        "true",
        "false",
        "null",
        "PI",
        "TAU",
        "INF",
        "NAN",
        "get",
        "set",
        "free",
        "new",
    ]
)


class GenError(Exception):
    """The protos use something this generator does not support; extend it rather than hand-edit the output."""


def descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    """Compiles every proto under protos/ with grpc_tools.protoc into a FileDescriptorSet (with comments)."""
    include = str(Path(protoc.__file__).parent / "_proto")
    protos = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        args = ["protoc", f"-I{PROTOS}", f"-I{include}", "--include_source_info", f"--descriptor_set_out={out}"]
        if protoc.main([*args, *protos]) != 0:
            raise GenError("protoc failed")
        fds = descriptor_pb2.FileDescriptorSet()
        fds.ParseFromString(out.read_bytes())
    return fds


class Model:
    """Index of a FileDescriptorSet: messages and enums by full name, with their doc comments."""

    def __init__(self, fds: descriptor_pb2.FileDescriptorSet) -> None:
        self.messages: dict[str, descriptor_pb2.DescriptorProto] = {}
        self.enums: dict[str, descriptor_pb2.EnumDescriptorProto] = {}
        self.services: dict[str, descriptor_pb2.ServiceDescriptorProto] = {}
        self.comments: dict[tuple[str, ...], str] = {}  # keyed by (full name[, member])
        self.parent: dict[str, str] = {}  # nested type -> enclosing message
        for f in fds.file:
            docs = {tuple(loc.path): loc.leading_comments for loc in f.source_code_info.location}
            pkg = f".{f.package}" if f.package else ""
            for i, m in enumerate(f.message_type):
                self._message(m, pkg, (4, i), docs, None)
            for i, e in enumerate(f.enum_type):
                self._enum(e, pkg, (5, i), docs)
            for i, s in enumerate(f.service):
                name = f"{pkg}.{s.name}"
                self.services[name] = s
                self.comments[(name,)] = docs.get((6, i), "")
                for j, meth in enumerate(s.method):
                    self.comments[(name, meth.name)] = docs.get((6, i, 2, j), "")

    def _message(
        self,
        m: descriptor_pb2.DescriptorProto,
        scope: str,
        path: tuple[int, ...],
        docs: dict[tuple[int, ...], str],
        parent: str | None,
    ) -> None:
        name = f"{scope}.{m.name}"
        self.messages[name] = m
        self.comments[(name,)] = docs.get(path, "")
        if parent:
            self.parent[name] = parent
        for j, field in enumerate(m.field):
            self.comments[(name, field.name)] = docs.get((*path, 2, j), "")
        for k, nested in enumerate(m.nested_type):
            self._message(nested, name, (*path, 3, k), docs, name)
        for k, e in enumerate(m.enum_type):
            self._enum(e, name, (*path, 4, k), docs)
            self.parent[f"{name}.{e.name}"] = name

    def _enum(
        self, e: descriptor_pb2.EnumDescriptorProto, scope: str, path: tuple[int, ...], docs: dict[tuple[int, ...], str]
    ) -> None:
        name = f"{scope}.{e.name}"
        self.enums[name] = e
        self.comments[(name,)] = docs.get(path, "")
        for j, v in enumerate(e.value):
            self.comments[(name, v.name)] = docs.get((*path, 2, j), "")

    def closure(self, methods: tuple[str, ...]) -> list[str]:
        """The messages the methods use, transitively, in a stable order (first reached first)."""
        order: list[str] = []

        def visit(name: str) -> None:
            if name in order:
                return
            if name not in self.messages:
                raise GenError(f"unknown message {name}")
            order.append(name)
            for field in self.messages[name].field:
                if field.type == FDP.TYPE_MESSAGE:
                    visit(field.type_name)

        for method in methods:
            service, _, rpc = method.partition("/")
            svc = self.services.get(f".{service}")
            found = [m for m in svc.method if m.name == rpc] if svc else []
            if not found:
                raise GenError(f"unknown RPC {method}")
            visit(found[0].input_type)
            visit(found[0].output_type)
        return order


def class_name(full_name: str) -> str:
    """A message's GDScript inner class name: its short proto name (the emitter rejects clashes)."""
    return full_name.split(".")[-1]


def field_name(name: str) -> str:
    return f"{name}_" if name in RESERVED else name


def doc_lines(text: str, indent: str) -> list[str]:
    """A proto comment as `##` lines, rewrapped to fit the line length."""
    text = " ".join(line.strip() for line in text.strip().splitlines() if line.strip())
    if not text:
        return []
    width = LINE_LENGTH - len(indent) * 4 - 3
    return [f"{indent}## {line}" for line in textwrap.wrap(text, width, break_long_words=False)]


class Emitter:
    """Writes GDScript lines for the model."""

    def __init__(self, model: Model, methods: tuple[str, ...], source: str) -> None:
        self.model = model
        self.methods = methods
        self.source = source
        self.lines: list[str] = []
        self.messages = model.closure(methods)
        names = [class_name(n) for n in self.messages]
        if len(set(names)) != len(names):
            raise GenError(f"two messages share a short name: {sorted(names)}")

    def out(self, line: str = "") -> None:
        self.lines.append(line)

    def emit(self) -> str:
        self.out(f"# Generated by tools/gen_gdscript.py from {self.source}.")
        self.out("# Do not edit: change the protos and run `python tools/gen_gdscript.py` (a test fails while this")
        self.out("# file is stale).")
        self.out("# gdlint: disable=max-file-lines,max-public-methods,function-name")
        self.out("class_name NpcProto")
        self.out("extends RefCounted")
        self.out("## The npcserver API messages the NPC dialogue addon uses, with protobuf binary encode/decode.")
        self.out("##")
        self.out("## Each message is an inner class: [code]to_bytes()[/code] and [code]from_bytes()[/code] use the")
        self.out("## wire format (byte-identical to the server's protobuf), [code]to_dict()[/code] and")
        self.out("## [code]from_dict()[/code] give plain Dictionaries a save game can store. Enum fields are ints.")
        top_enums = [n for n in self.model.enums if n not in self.model.parent and self._enum_used(n)]
        for name in top_enums:
            self.out()
            self._enum(name, "")
        for svc_name in sorted({m.partition("/")[0] for m in self.methods}):
            self.out()
            self.out()
            self._service(svc_name)
        for name in self.messages:
            self.out()
            self.out()
            self._message(name)
        return "\n".join(self.lines) + "\n"

    def _enum_used(self, enum_name: str) -> bool:
        return any(f.type_name == enum_name for m in self.messages for f in self.model.messages[m].field)

    def _enum(self, name: str, indent: str) -> None:
        enum = self.model.enums[name]
        self.lines.extend(doc_lines(self.model.comments[(name,)], indent))
        self.out(f"{indent}enum {name.split('.')[-1]} {{")
        for v in enum.value:
            self.lines.extend(doc_lines(self.model.comments[(name, v.name)], indent + "\t"))
            self.out(f"{indent}\t{v.name} = {v.number},")
        self.out(f"{indent}}}")

    def _service(self, svc_name: str) -> None:
        full = f".{svc_name}"
        short = svc_name.split(".")[-1]
        self.lines.extend(doc_lines(self.model.comments[(full,)] + " The RPC paths, for gRPC-Web POSTs.", ""))
        self.out(f"class {short}:")
        for method in self.methods:
            service, _, rpc = method.partition("/")
            if service != svc_name:
                continue
            self.lines.extend(doc_lines(self.model.comments[(full, rpc)], "\t"))
            const = "".join("_" + c if c.isupper() else c.upper() for c in rpc).lstrip("_")
            self.out(f'\tconst {const} := "/{method}"')

    def _field_type(self, f: descriptor_pb2.FieldDescriptorProto) -> str:
        if f.type == FDP.TYPE_MESSAGE:
            return class_name(f.type_name)
        if f.type not in SCALARS:
            raise GenError(f"field {f.name}: type {FDP.Type.Name(f.type)} is not supported by the generator")
        return SCALARS[f.type].gd_type

    def _message(self, full: str) -> None:
        msg = self.model.messages[full]
        cls = class_name(full)
        self.lines.extend(doc_lines(self.model.comments[(full,)], ""))
        self.out(f"class {cls}:")
        for e in msg.enum_type:
            self._enum(f"{full}.{e.name}", "\t")
            self.out()
        oneofs = self._real_oneofs(msg)
        for f in msg.field:
            self._field_decl(full, msg, f, oneofs)
        for group, members in oneofs.items():
            self.out()
            self.out(f"\t## Which field of the [code]{group}[/code] oneof is set (its name), or an empty String.")
            self.out(f"\tfunc get_{group}_case() -> String:")
            for m in members:
                self.out(f"\t\tif {field_name(m.name)} != null:")
                self.out(f'\t\t\treturn "{m.name}"')
            self.out('\t\treturn ""')
        self._to_bytes(msg)
        self._read_from(cls, msg)
        self._to_dict(msg)
        self._from_dict(cls, msg)

    @staticmethod
    def _real_oneofs(msg: descriptor_pb2.DescriptorProto) -> dict[str, list[descriptor_pb2.FieldDescriptorProto]]:
        groups: dict[str, list[descriptor_pb2.FieldDescriptorProto]] = {}
        for f in msg.field:
            if f.HasField("oneof_index") and not f.proto3_optional:
                if f.type != FDP.TYPE_MESSAGE:
                    raise GenError(f"oneof member {f.name}: only message members are supported")
                groups.setdefault(msg.oneof_decl[f.oneof_index].name, []).append(f)
        return groups

    def _field_decl(
        self,
        full: str,
        msg: descriptor_pb2.DescriptorProto,
        f: descriptor_pb2.FieldDescriptorProto,
        oneofs: dict[str, list[descriptor_pb2.FieldDescriptorProto]],
    ) -> None:
        name = field_name(f.name)
        gd_type = self._field_type(f)
        doc = self.model.comments[(full, f.name)]
        if f.type == FDP.TYPE_ENUM:
            doc += f" (an NpcProto.{f.type_name.split('.')[-1]} value)"
        self.lines.extend(doc_lines(doc, "\t"))
        if f.label == FDP.LABEL_REPEATED:
            if f.type not in (FDP.TYPE_MESSAGE, FDP.TYPE_STRING, FDP.TYPE_BYTES):
                raise GenError(f"repeated field {f.name}: packed scalars are not supported by the generator yet")
            self.out(f"\tvar {name}: Array[{gd_type}] = []")
        elif f.type == FDP.TYPE_MESSAGE:
            siblings = next((g for g in oneofs.values() if f in g), [])
            if siblings:
                self.out(f"\tvar {name}: {gd_type} = null:")
                self.out("\t\tset(value):")
                self.out(f"\t\t\t{name} = value")
                self.out("\t\t\tif value != null:")
                for other in siblings:
                    if other is not f:
                        self.out(f"\t\t\t\t{field_name(other.name)} = null")
            else:
                self.out(f"\tvar {name}: {gd_type} = null")
        elif f.proto3_optional:
            self.out(f"\tvar {name}: {gd_type} = {SCALARS[f.type].default}:")
            self.out("\t\tset(value):")
            self.out(f"\t\t\t{name} = value")
            self.out(f"\t\t\thas_{f.name} = true")
            self.out(f"\t## Whether [member {name}] is set; when false the server uses its default.")
            self.out(f"\tvar has_{f.name}: bool = false")
        else:
            self.out(f"\tvar {name}: {gd_type} = {SCALARS[f.type].default}")
        del msg

    def _to_bytes(self, msg: descriptor_pb2.DescriptorProto) -> None:
        if not self.lines[-1].startswith("class "):
            self.out()
        self.out("\t## Encodes this message in the protobuf binary wire format.")
        self.out("\tfunc to_bytes() -> PackedByteArray:")
        self.out("\t\tvar w := NpcWire.Writer.new()")
        for f in sorted(msg.field, key=lambda x: x.number):
            name = field_name(f.name)
            if f.label == FDP.LABEL_REPEATED:
                self.out(f"\t\tfor item in {name}:")
                value = "item.to_bytes()" if f.type == FDP.TYPE_MESSAGE else "item"
                put = "put_bytes" if f.type == FDP.TYPE_MESSAGE else SCALARS[f.type].put
                self.out(f"\t\t\tw.{put}({f.number}, {value})")
            elif f.type == FDP.TYPE_MESSAGE:
                self.out(f"\t\tif {name} != null:")
                self.out(f"\t\t\tw.put_bytes({f.number}, {name}.to_bytes())")
            else:
                scalar = SCALARS[f.type]
                test = f"has_{f.name}" if f.proto3_optional else scalar.set_test.format(v=name)
                self.out(f"\t\tif {test}:")
                self.out(f"\t\t\tw.{scalar.put}({f.number}, {name})")
        self.out("\t\treturn w.data")

    def _read_from(self, cls: str, msg: descriptor_pb2.DescriptorProto) -> None:
        self.out()
        self.out("\t## Decodes protobuf binary wire bytes. Returns null when they are malformed.")
        self.out(f"\tstatic func from_bytes(data: PackedByteArray) -> {cls}:")
        self.out("\t\tvar r := NpcWire.Reader.new(data)")
        self.out("\t\tvar m := read_from(r, data.size())")
        self.out("\t\treturn null if r.failed else m")
        self.out()
        self.out("\t## Decodes the message that spans the reader's bytes up to [param end] (used for nesting).")
        self.out(f"\tstatic func read_from(r: NpcWire.Reader, end: int) -> {cls}:")
        self.out(f"\t\tvar m := {cls}.new()")
        self.out("\t\twhile r.pos < end and not r.failed:")
        self.out("\t\t\tvar tag := r.read_varint()")
        if msg.field:
            self.out("\t\t\tmatch tag:")
            for f in sorted(msg.field, key=lambda x: x.number):
                name = field_name(f.name)
                wire_type = 2 if f.type == FDP.TYPE_MESSAGE else SCALARS[f.type].wire_type
                self.out(f"\t\t\t\t{(f.number << 3) | wire_type}:")
                if f.type == FDP.TYPE_MESSAGE:
                    value = f"{class_name(f.type_name)}.read_from(r, r.read_length_end())"
                else:
                    value = f"r.{SCALARS[f.type].read}()"
                if f.label == FDP.LABEL_REPEATED:
                    self.out(f"\t\t\t\t\tm.{name}.append({value})")
                else:
                    self.out(f"\t\t\t\t\tm.{name} = {value}")
            self.out("\t\t\t\t_:")
            self.out("\t\t\t\t\tr.skip(tag)")
        else:
            self.out("\t\t\tr.skip(tag)")
        self.out("\t\tr.expect_end(end)")
        self.out("\t\treturn m")

    def _to_dict(self, msg: descriptor_pb2.DescriptorProto) -> None:
        self.out()
        self.out("\t## The fields as a Dictionary keyed by proto field name; unset messages and optionals are left")
        self.out("\t## out, nested messages are Dictionaries.")
        self.out("\tfunc to_dict() -> Dictionary:")
        self.out("\t\tvar d := {}")
        for f in msg.field:
            name = field_name(f.name)
            if f.label == FDP.LABEL_REPEATED:
                if f.type == FDP.TYPE_MESSAGE:
                    self.out(f"\t\tvar {f.name}_list: Array = []")
                    self.out(f"\t\tfor item in {name}:")
                    self.out(f"\t\t\t{f.name}_list.append(item.to_dict())")
                    self.out(f'\t\td["{f.name}"] = {f.name}_list')
                else:
                    self.out(f'\t\td["{f.name}"] = Array({name})')
            elif f.type == FDP.TYPE_MESSAGE:
                self.out(f"\t\tif {name} != null:")
                self.out(f'\t\t\td["{f.name}"] = {name}.to_dict()')
            elif f.proto3_optional:
                self.out(f"\t\tif has_{f.name}:")
                self.out(f'\t\t\td["{f.name}"] = {name}')
            else:
                self.out(f'\t\td["{f.name}"] = {name}')
        self.out("\t\treturn d")

    def _from_dict(self, cls: str, msg: descriptor_pb2.DescriptorProto) -> None:
        self.out()
        self.out("\t## Builds the message from a Dictionary shaped like [method to_dict]'s (missing keys keep their")
        self.out("\t## defaults; numbers may be floats, as after a JSON round trip).")
        arg = "d" if msg.field else "_d"  # gdlint rejects an unused argument without the underscore
        self.out(f"\tstatic func from_dict({arg}: Dictionary) -> {cls}:")
        self.out(f"\t\tvar m := {cls}.new()")
        for f in msg.field:
            name = field_name(f.name)
            key = f'd["{f.name}"]'
            if f.label == FDP.LABEL_REPEATED:
                self.out(f'\t\tfor item: Variant in d.get("{f.name}", []):')
                if f.type == FDP.TYPE_MESSAGE:
                    self.out("\t\t\tif item is Dictionary:")
                    self.out(f"\t\t\t\tm.{name}.append({class_name(f.type_name)}.from_dict(item))")
                else:
                    self.out(f"\t\t\tm.{name}.append({SCALARS[f.type].coerce.format(v='item')})")
            elif f.type == FDP.TYPE_MESSAGE:
                self.out(f'\t\tif d.get("{f.name}") is Dictionary:')
                self.out(f"\t\t\tm.{name} = {class_name(f.type_name)}.from_dict({key})")
            else:
                self.out(f'\t\tif d.has("{f.name}"):')
                self.out(f"\t\t\tm.{name} = {SCALARS[f.type].coerce.format(v=key)}")
        self.out("\t\treturn m")


def generate() -> str:
    """The GDScript source of npc_proto.gd, generated from the current protos."""
    fds = descriptor_set()
    sources = ", ".join(f"protos/{f.name}" for f in fds.file if not f.name.startswith("google/"))
    return Emitter(Model(fds), METHODS, sources).emit()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the committed file is stale")
    args = parser.parse_args()
    code = generate()
    rel = OUT.relative_to(ROOT)
    if args.check:
        if not OUT.exists() or OUT.read_text(encoding="utf-8") != code:
            print(f"{rel} is stale; run python tools/gen_gdscript.py", file=sys.stderr)
            return 1
        print(f"{rel} is up to date")
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(code, encoding="utf-8")
    print(f"wrote {rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
