"""Generates the Unity package's C# protobuf codec from protos/.

Run: python tools/gen_csharp.py [--check]. The protos are compiled by grpc_tools.protoc into a FileDescriptorSet
(with source info, so proto comments become XML doc comments); the C# is written from that descriptor, never from
.proto text. With --check the code is generated in memory and the command exits 1 when the committed file differs
(tests/unity/test_unity_package.py runs it).

The output needs only the small runtime in unity_package/Runtime/Core/Protobuf (ProtoWriter/ProtoReader), and
stays inside C# 7.2 so Debian mono's mcs and every Unity version since 2021.3 compile it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import descriptor_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT = ROOT / "unity_package" / "Runtime" / "Core" / "Generated" / "NpcServerApi.g.cs"

FDP = descriptor_pb2.FieldDescriptorProto

# proto scalar type -> (C# type, ProtoWriter/ProtoReader method suffix, wire type, default-check expression format)
SCALARS: dict[int, tuple[str, str, str, str]] = {
    FDP.TYPE_STRING: ("string", "String", "LengthDelimited", "{0}.Length != 0"),
    FDP.TYPE_BYTES: ("byte[]", "Bytes", "LengthDelimited", "{0}.Length != 0"),
    FDP.TYPE_BOOL: ("bool", "Bool", "Varint", "{0}"),
    FDP.TYPE_INT32: ("int", "Int32", "Varint", "{0} != 0"),
    FDP.TYPE_INT64: ("long", "Int64", "Varint", "{0} != 0L"),
    FDP.TYPE_UINT32: ("uint", "UInt32", "Varint", "{0} != 0U"),
    FDP.TYPE_UINT64: ("ulong", "UInt64", "Varint", "{0} != 0UL"),
    FDP.TYPE_FLOAT: ("float", "Float", "Fixed32", "ProtoWriter.IsNonDefault({0})"),
    FDP.TYPE_DOUBLE: ("double", "Double", "Fixed64", "ProtoWriter.IsNonDefault({0})"),
}
DEFAULTS = {"string": '""', "byte[]": "new byte[0]", "bool": "false"}
# C# names the generated members use; a field with one of these names gets a trailing underscore.
RESERVED_MEMBERS = {"WriteTo", "MergeFrom", "ToByteArray", "ParseFrom", "Types", "Equals", "GetHashCode", "ToString"}


def pascal(name: str) -> str:
    """snake_case or UPPER_SNAKE -> PascalCase, as Google's C# generator names properties and enum values."""
    return "".join(part[:1].upper() + part[1:].lower() for part in name.split("_") if part)


def xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def proto_descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    """Compiles every proto under protos/ with grpc_tools.protoc and returns the FileDescriptorSet."""
    include = str(Path(protoc.__file__).parent / "_proto")
    protos = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        args = [
            "protoc",
            f"-I{PROTOS}",
            f"-I{include}",
            f"--descriptor_set_out={out}",
            "--include_source_info",
            *protos,
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        fds = descriptor_pb2.FileDescriptorSet()
        fds.ParseFromString(out.read_bytes())
    return fds


@dataclass
class Context:
    """What the writers need across files: comments by source path and C# names by proto full name."""

    comments: dict[tuple[int, ...], str]
    type_names: dict[str, str]
    enums: set[str]
    map_entries: set[str] = field(default_factory=set)
    lines: list[str] = field(default_factory=list)

    def emit(self, indent: int, text: str = "") -> None:
        self.lines.append(("    " * indent + text) if text else "")

    def doc(self, indent: int, path: tuple[int, ...], fallback: str) -> None:
        text = self.comments.get(path, "").strip() or fallback
        self.emit(indent, "/// <summary>")
        for line in text.splitlines():
            self.emit(indent, f"/// {xml_escape(line.strip())}".rstrip())
        self.emit(indent, "/// </summary>")


def collect_names(fdp: descriptor_pb2.FileDescriptorProto, ctx: Context) -> None:
    """Maps each message/enum full name (".pkg.Outer.Inner") to its C# name ("Outer.Types.Inner")."""

    def walk_message(msg: descriptor_pb2.DescriptorProto, proto_prefix: str, cs_prefix: str) -> None:
        full = f"{proto_prefix}.{msg.name}"
        cs = f"{cs_prefix}{msg.name}"
        ctx.type_names[full] = cs
        if msg.options.map_entry:
            ctx.map_entries.add(full)
        for nested in msg.nested_type:
            walk_message(nested, full, f"{cs}.Types.")
        for enum in msg.enum_type:
            ctx.type_names[f"{full}.{enum.name}"] = f"{cs}.Types.{enum.name}"
            ctx.enums.add(f"{full}.{enum.name}")

    package = f".{fdp.package}"
    for msg in fdp.message_type:
        walk_message(msg, package, "")
    for enum in fdp.enum_type:
        ctx.type_names[f"{package}.{enum.name}"] = enum.name
        ctx.enums.add(f"{package}.{enum.name}")


def write_enum(ctx: Context, enum: descriptor_pb2.EnumDescriptorProto, path: tuple[int, ...], indent: int) -> None:
    ctx.doc(indent, path, f"The {enum.name} enum.")
    ctx.emit(indent, f"public enum {enum.name}")
    ctx.emit(indent, "{")
    # Google's C# convention: drop the UPPER_SNAKE enum-name prefix (FINISH_REASON_STOP -> Stop).
    prefix = "".join(f"{c}" if not c.isupper() or i == 0 else f"_{c}" for i, c in enumerate(enum.name)).upper() + "_"
    for i, value in enumerate(enum.value):
        name = value.name[len(prefix) :] if value.name.startswith(prefix) else value.name
        ctx.doc(indent + 1, (*path, 2, i), f"{value.name}.")
        ctx.emit(indent + 1, f"{pascal(name)} = {value.number},")
    ctx.emit(indent, "}")


@dataclass
class FieldInfo:
    """One field, with everything the writer needs in C# terms."""

    proto: descriptor_pb2.FieldDescriptorProto
    prop: str
    cs_type: str  # element type for repeated fields
    kind: str  # "scalar", "enum" or "message"
    suffix: str  # ProtoWriter/ProtoReader method suffix for scalars and enums
    wire: str
    repeated: bool
    optional: bool  # proto3 explicit presence on a scalar
    oneof: str | None  # the real oneof's C# name


def field_info(
    ctx: Context, msg: descriptor_pb2.DescriptorProto, f: descriptor_pb2.FieldDescriptorProto, class_name: str
) -> FieldInfo:
    prop = pascal(f.name)
    if prop == class_name or prop in RESERVED_MEMBERS:
        prop += "_"
    repeated = f.label == FDP.LABEL_REPEATED
    optional = f.proto3_optional
    oneof = None
    if f.HasField("oneof_index") and not optional:
        oneof = pascal(msg.oneof_decl[f.oneof_index].name)
    if f.type in SCALARS:
        cs_type, suffix, wire, _ = SCALARS[f.type]
        return FieldInfo(f, prop, cs_type, "scalar", suffix, wire, repeated, optional, oneof)
    if f.type == FDP.TYPE_ENUM:
        return FieldInfo(f, prop, ctx.type_names[f.type_name], "enum", "Int32", "Varint", repeated, optional, oneof)
    if f.type == FDP.TYPE_MESSAGE:
        if f.type_name in ctx.map_entries:
            raise SystemExit(f"map field {msg.name}.{f.name} is not supported by gen_csharp.py; add support first")
        return FieldInfo(
            f, prop, ctx.type_names[f.type_name], "message", "", "LengthDelimited", repeated, optional, oneof
        )
    raise SystemExit(f"field {msg.name}.{f.name} has type {f.type}, which gen_csharp.py does not support yet")


def write_message(ctx: Context, msg: descriptor_pb2.DescriptorProto, path: tuple[int, ...], indent: int) -> None:
    name = msg.name
    fields = [field_info(ctx, msg, f, name) for f in msg.field]
    ctx.doc(indent, path, f"The {name} message.")
    ctx.emit(indent, f"public sealed partial class {name} : IProtoMessage")
    ctx.emit(indent, "{")
    body = indent + 1

    if msg.nested_type or msg.enum_type:
        ctx.emit(body, "/// <summary>Types nested in this message.</summary>")
        ctx.emit(body, "public static partial class Types")
        ctx.emit(body, "{")
        for i, enum in enumerate(msg.enum_type):
            write_enum(ctx, enum, (*path, 4, i), body + 1)
        for i, nested in enumerate(msg.nested_type):
            write_message(ctx, nested, (*path, 3, i), body + 1)
        ctx.emit(body, "}")
        ctx.emit(body)

    oneofs: dict[str, list[FieldInfo]] = {}
    for i, fi in enumerate(fields):
        fpath = (*path, 2, i)
        if fi.oneof:
            oneofs.setdefault(fi.oneof, []).append(fi)
            continue
        ctx.doc(body, fpath, f"Field {fi.proto.name}.")
        if fi.repeated:
            ctx.emit(body, f"public List<{fi.cs_type}> {fi.prop} {{ get; private set; }} = new List<{fi.cs_type}>();")
        elif fi.optional:
            ctx.emit(body, "/// <remarks>Null when unset: the server then applies its default.</remarks>")
            nullable = "" if fi.cs_type in ("string", "byte[]") else "?"
            ctx.emit(body, f"public {fi.cs_type}{nullable} {fi.prop} {{ get; set; }}")
        elif fi.kind == "message":
            ctx.emit(body, "/// <remarks>Null when unset.</remarks>")
            ctx.emit(body, f"public {fi.cs_type} {fi.prop} {{ get; set; }}")
        elif fi.kind == "enum":
            ctx.emit(body, f"public {fi.cs_type} {fi.prop} {{ get; set; }}")
        else:
            default = DEFAULTS.get(fi.cs_type)
            init = f" = {default};" if default else ""
            ctx.emit(body, f"public {fi.cs_type} {fi.prop} {{ get; set; }}{init}")
        ctx.emit(body)

    for oneof_name, members in oneofs.items():
        case_enum = f"{oneof_name}OneofCase"
        store = f"_{oneof_name[0].lower()}{oneof_name[1:]}"
        ctx.emit(body, f"/// <summary>Which field of the {oneof_name} oneof is set.</summary>")
        ctx.emit(body, f"public enum {case_enum}")
        ctx.emit(body, "{")
        ctx.emit(body + 1, "/// <summary>No field is set.</summary>")
        ctx.emit(body + 1, "None = 0,")
        for fi in members:
            ctx.emit(body + 1, f"/// <summary>{fi.prop} is set.</summary>")
            ctx.emit(body + 1, f"{fi.prop} = {fi.proto.number},")
        ctx.emit(body, "}")
        ctx.emit(body)
        ctx.emit(body, f"object {store};")
        ctx.emit(body, f"{case_enum} {store}Case;")
        ctx.emit(body)
        ctx.emit(body, f"/// <summary>Which field of the {oneof_name} oneof is set.</summary>")
        ctx.emit(body, f"public {case_enum} {oneof_name}Case {{ get {{ return {store}Case; }} }}")
        ctx.emit(body)
        ctx.emit(body, f"/// <summary>Clears the {oneof_name} oneof.</summary>")
        ctx.emit(body, f"public void Clear{oneof_name}() {{ {store} = null; {store}Case = {case_enum}.None; }}")
        ctx.emit(body)
        for fi in members:
            idx = list(msg.field).index(fi.proto)
            ctx.doc(body, (*path, 2, idx), f"Field {fi.proto.name}.")
            if fi.kind != "message" and fi.cs_type not in ("string", "byte[]"):
                raise SystemExit(f"oneof member {name}.{fi.proto.name}: only messages and strings are supported")
            ctx.emit(body, f"public {fi.cs_type} {fi.prop}")
            ctx.emit(body, "{")
            ctx.emit(body + 1, f"get {{ return {store}Case == {case_enum}.{fi.prop} ? ({fi.cs_type}){store} : null; }}")
            ctx.emit(
                body + 1,
                f"set {{ {store} = value; {store}Case = value == null ? {case_enum}.None : {case_enum}.{fi.prop}; }}",
            )
            ctx.emit(body, "}")
            ctx.emit(body)

    # Serialization: fields in number order, which is also the order protobuf's own encoders use, so the bytes are
    # identical to Python's for the same message.
    ctx.emit(body, "/// <summary>Writes every set field in field-number order.</summary>")
    ctx.emit(body, "public void WriteTo(ProtoWriter writer)")
    ctx.emit(body, "{")
    for fi in sorted(fields, key=lambda x: x.proto.number):
        write_field(ctx, fi, body + 1)
    ctx.emit(body, "}")
    ctx.emit(body)

    ctx.emit(body, "/// <summary>Reads fields until the reader ends; unknown fields are skipped.</summary>")
    ctx.emit(body, "public void MergeFrom(ProtoReader reader)")
    ctx.emit(body, "{")
    ctx.emit(body + 1, "int number;")
    ctx.emit(body + 1, "WireType wire;")
    ctx.emit(body + 1, "while (reader.ReadTag(out number, out wire))")
    ctx.emit(body + 1, "{")
    ctx.emit(body + 2, "switch (number)")
    ctx.emit(body + 2, "{")
    for fi in sorted(fields, key=lambda x: x.proto.number):
        read_field(ctx, fi, body + 3)
    ctx.emit(body + 3, "default:")
    ctx.emit(body + 4, "reader.SkipField(wire);")
    ctx.emit(body + 4, "break;")
    ctx.emit(body + 2, "}")
    ctx.emit(body + 1, "}")
    ctx.emit(body, "}")
    ctx.emit(body)

    ctx.emit(body, "/// <summary>Serializes this message to protobuf bytes.</summary>")
    ctx.emit(body, "public byte[] ToByteArray() { return ProtoWriter.Serialize(this); }")
    ctx.emit(body)
    ctx.emit(body, "/// <summary>Parses protobuf bytes.</summary>")
    ctx.emit(body, f"public static {name} ParseFrom(byte[] data) {{ return ProtoReader.Parse<{name}>(data); }}")
    ctx.emit(indent, "}")
    ctx.emit(indent)


def write_value(fi: FieldInfo, expr: str) -> str:
    if fi.kind == "message":
        return f"writer.WriteMessage({expr});"
    if fi.kind == "enum":
        return f"writer.WriteInt32((int){expr});"
    return f"writer.Write{fi.suffix}({expr});"


def write_field(ctx: Context, fi: FieldInfo, indent: int) -> None:
    number = fi.proto.number
    tag = f"writer.WriteTag({number}, WireType.{fi.wire});"
    packable = fi.kind == "enum" or (fi.kind == "scalar" and fi.wire != "LengthDelimited")
    if fi.repeated and packable:
        # proto3 packs repeated scalars by default: one length-delimited run of values.
        ctx.emit(indent, f"if ({fi.prop}.Count != 0)")
        ctx.emit(indent, "{")
        ctx.emit(indent + 1, "var packed = new ProtoWriter();")
        ctx.emit(indent + 1, f"foreach (var item in {fi.prop}) {write_value(fi, 'item').replace('writer.', 'packed.')}")
        ctx.emit(indent + 1, f"writer.WriteTag({number}, WireType.LengthDelimited);")
        ctx.emit(indent + 1, "var bytes = packed.ToArray();")
        ctx.emit(indent + 1, "writer.WriteRawVarint((ulong)bytes.Length);")
        ctx.emit(indent + 1, "writer.WriteRawBytes(bytes, 0, bytes.Length);")
        ctx.emit(indent, "}")
        return
    if fi.repeated:
        ctx.emit(indent, f"foreach (var item in {fi.prop}) {{ {tag} {write_value(fi, 'item')} }}")
        return
    if fi.optional and fi.cs_type in ("string", "byte[]"):
        ctx.emit(indent, f"if ({fi.prop} != null) {{ {tag} {write_value(fi, fi.prop)} }}")
        return
    if fi.optional:
        ctx.emit(indent, f"if ({fi.prop}.HasValue) {{ {tag} {write_value(fi, f'{fi.prop}.Value')} }}")
        return
    if fi.kind == "message" or fi.oneof:
        ctx.emit(indent, f"if ({fi.prop} != null) {{ {tag} {write_value(fi, fi.prop)} }}")
        return
    if fi.kind == "enum":
        ctx.emit(indent, f"if ((int){fi.prop} != 0) {{ {tag} {write_value(fi, fi.prop)} }}")
        return
    check = SCALARS[fi.proto.type][3].format(fi.prop)
    ctx.emit(indent, f"if ({check}) {{ {tag} {write_value(fi, fi.prop)} }}")


def read_expr(fi: FieldInfo, reader: str = "reader") -> str:
    if fi.kind == "enum":
        return f"({fi.cs_type}){reader}.ReadInt32()"
    return f"{reader}.Read{fi.suffix}()"


def read_field(ctx: Context, fi: FieldInfo, indent: int) -> None:
    ctx.emit(indent, f"case {fi.proto.number}:")
    inner = indent + 1
    packable = fi.kind == "enum" or (fi.kind == "scalar" and fi.wire != "LengthDelimited")
    if fi.repeated and packable:
        # Parsers must accept both packed and unpacked encodings of repeated scalars.
        ctx.emit(inner, "if (wire == WireType.LengthDelimited)")
        ctx.emit(inner, "{")
        ctx.emit(inner + 1, "var packed = reader.ReadPacked();")
        ctx.emit(inner + 1, f"while (!packed.IsAtEnd) {fi.prop}.Add({read_expr(fi, 'packed')});")
        ctx.emit(inner, "}")
        ctx.emit(inner, f"else if (wire == WireType.{fi.wire}) {fi.prop}.Add({read_expr(fi)});")
        ctx.emit(inner, "else reader.SkipField(wire);")
        ctx.emit(inner, "break;")
        return
    ctx.emit(inner, f"if (wire != WireType.{fi.wire}) {{ reader.SkipField(wire); break; }}")
    if fi.kind == "message":
        if fi.repeated:
            ctx.emit(inner, "{")
            ctx.emit(inner + 1, f"var item = new {fi.cs_type}();")
            ctx.emit(inner + 1, "reader.ReadMessage(item);")
            ctx.emit(inner + 1, f"{fi.prop}.Add(item);")
            ctx.emit(inner, "}")
        else:
            # A repeated occurrence of a singular message field merges into the existing value (protobuf rule).
            ctx.emit(inner, "{")
            ctx.emit(inner + 1, f"var item = {fi.prop} ?? new {fi.cs_type}();")
            ctx.emit(inner + 1, "reader.ReadMessage(item);")
            ctx.emit(inner + 1, f"{fi.prop} = item;")
            ctx.emit(inner, "}")
    elif fi.repeated:
        ctx.emit(inner, f"{fi.prop}.Add({read_expr(fi)});")
    else:
        ctx.emit(inner, f"{fi.prop} = {read_expr(fi)};")
    ctx.emit(inner, "break;")


def write_services(ctx: Context, fdp: descriptor_pb2.FileDescriptorProto, indent: int) -> None:
    for si, service in enumerate(fdp.service):
        ctx.doc(indent, (6, si), f"The {service.name} service.")
        ctx.emit(indent, "/// <remarks>gRPC-Web paths of its methods.</remarks>")
        ctx.emit(indent, f"public static class {service.name}Paths")
        ctx.emit(indent, "{")
        for mi, method in enumerate(service.method):
            ctx.doc(indent + 1, (6, si, 2, mi), f"{method.name}.")
            ctx.emit(indent + 1, f'public const string {method.name} = "/{fdp.package}.{service.name}/{method.name}";')
        ctx.emit(indent, "}")
        ctx.emit(indent)


def generate() -> str:
    """Returns the whole generated C# file."""
    fds = proto_descriptor_set()
    ours = [f for f in fds.file if not f.name.startswith("google/")]
    if not ours:
        raise SystemExit(f"no protos found under {PROTOS}")
    namespaces = {f.options.csharp_namespace for f in ours}
    if len(namespaces) != 1 or not next(iter(namespaces)):
        raise SystemExit(f"every proto needs the same option csharp_namespace; found {sorted(namespaces)}")
    ctx = Context(comments={}, type_names={}, enums=set())
    for fdp in ours:
        collect_names(fdp, ctx)
    sources = ", ".join(f"protos/{f.name}" for f in ours)
    ctx.emit(0, f"// <auto-generated> by tools/gen_csharp.py from {sources}. Do not edit: change the proto and run")
    ctx.emit(0, "// `python tools/gen_csharp.py`. </auto-generated>")
    ctx.emit(0, "using System.Collections.Generic;")
    ctx.emit(0, "using NpcServer.Dialogue.Protobuf;")
    ctx.emit(0)
    ctx.emit(0, f"namespace {next(iter(namespaces))}")
    ctx.emit(0, "{")
    for fdp in ours:
        ctx.comments = {tuple(loc.path): loc.leading_comments for loc in fdp.source_code_info.location}
        write_services(ctx, fdp, 1)
        for i, enum in enumerate(fdp.enum_type):
            write_enum(ctx, enum, (5, i), 1)
            ctx.emit(1)
        for i, msg in enumerate(fdp.message_type):
            write_message(ctx, msg, (4, i), 1)
    while ctx.lines and not ctx.lines[-1]:
        ctx.lines.pop()
    ctx.emit(0, "}")
    return "\n".join(ctx.lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if the committed C# codec is stale")
    args = parser.parse_args()
    code = generate()
    rel = OUT.relative_to(ROOT)
    if args.check:
        if not OUT.exists() or OUT.read_text(encoding="utf-8") != code:
            print(f"{rel} is stale; run python tools/gen_csharp.py", file=sys.stderr)
            return 1
        print(f"{rel} is up to date")
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(code, encoding="utf-8", newline="\n")
    print(f"wrote {rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
