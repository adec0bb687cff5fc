using System;
using System.Collections.Generic;
using System.Globalization;
using System.Text;

namespace NpcServer.Dialogue
{
    /// <summary>
    /// A small JSON reader for structured NPC lines, so the package needs no JSON DLL. Objects become
    /// <see cref="Dictionary{TKey,TValue}"/> (string to object), arrays <see cref="List{T}"/> of object, numbers
    /// double, plus string, bool and null. Unity's JsonUtility still works for typed payloads.
    /// </summary>
    public static class NpcJson
    {
        /// <summary>Parses JSON text; throws <see cref="FormatException"/> with the position of the error.</summary>
        public static object Parse(string json)
        {
            if (json == null) throw new ArgumentNullException("json");
            int position = 0;
            object value = ReadValue(json, ref position, 0);
            SkipWhitespace(json, ref position);
            if (position != json.Length) throw Error(json, position, "unexpected text after the JSON value");
            return value;
        }

        /// <summary>Writes a string as a JSON string literal (quotes and escapes included).</summary>
        public static string Quote(string value)
        {
            var builder = new StringBuilder(value.Length + 2);
            builder.Append('"');
            foreach (char c in value)
            {
                switch (c)
                {
                    case '"':
                        builder.Append("\\\"");
                        break;
                    case '\\':
                        builder.Append("\\\\");
                        break;
                    case '\n':
                        builder.Append("\\n");
                        break;
                    case '\r':
                        builder.Append("\\r");
                        break;
                    case '\t':
                        builder.Append("\\t");
                        break;
                    default:
                        if (c < 0x20) builder.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                        else builder.Append(c);
                        break;
                }
            }
            builder.Append('"');
            return builder.ToString();
        }

        const int MaxDepth = 64;

        static object ReadValue(string json, ref int position, int depth)
        {
            if (depth > MaxDepth) throw Error(json, position, "JSON nested deeper than " + MaxDepth);
            SkipWhitespace(json, ref position);
            if (position >= json.Length) throw Error(json, position, "unexpected end of JSON");
            char c = json[position];
            if (c == '{') return ReadObject(json, ref position, depth);
            if (c == '[') return ReadArray(json, ref position, depth);
            if (c == '"') return ReadString(json, ref position);
            if (c == '-' || (c >= '0' && c <= '9')) return ReadNumber(json, ref position);
            if (Matches(json, position, "true"))
            {
                position += 4;
                return true;
            }
            if (Matches(json, position, "false"))
            {
                position += 5;
                return false;
            }
            if (Matches(json, position, "null"))
            {
                position += 4;
                return null;
            }
            throw Error(json, position, "unexpected character '" + c + "'");
        }

        static Dictionary<string, object> ReadObject(string json, ref int position, int depth)
        {
            var result = new Dictionary<string, object>(StringComparer.Ordinal);
            position++;
            SkipWhitespace(json, ref position);
            if (position < json.Length && json[position] == '}')
            {
                position++;
                return result;
            }
            while (true)
            {
                SkipWhitespace(json, ref position);
                if (position >= json.Length || json[position] != '"') throw Error(json, position, "expected a key");
                string key = ReadString(json, ref position);
                SkipWhitespace(json, ref position);
                Expect(json, ref position, ':');
                result[key] = ReadValue(json, ref position, depth + 1);
                SkipWhitespace(json, ref position);
                if (position < json.Length && json[position] == ',')
                {
                    position++;
                    continue;
                }
                Expect(json, ref position, '}');
                return result;
            }
        }

        static List<object> ReadArray(string json, ref int position, int depth)
        {
            var result = new List<object>();
            position++;
            SkipWhitespace(json, ref position);
            if (position < json.Length && json[position] == ']')
            {
                position++;
                return result;
            }
            while (true)
            {
                result.Add(ReadValue(json, ref position, depth + 1));
                SkipWhitespace(json, ref position);
                if (position < json.Length && json[position] == ',')
                {
                    position++;
                    continue;
                }
                Expect(json, ref position, ']');
                return result;
            }
        }

        static string ReadString(string json, ref int position)
        {
            var builder = new StringBuilder();
            position++;
            while (position < json.Length)
            {
                char c = json[position++];
                if (c == '"') return builder.ToString();
                if (c < 0x20) throw Error(json, position - 1, "control character in a string");
                if (c != '\\')
                {
                    builder.Append(c);
                    continue;
                }
                if (position >= json.Length) break;
                char escape = json[position++];
                switch (escape)
                {
                    case '"':
                    case '\\':
                    case '/':
                        builder.Append(escape);
                        break;
                    case 'b':
                        builder.Append('\b');
                        break;
                    case 'f':
                        builder.Append('\f');
                        break;
                    case 'n':
                        builder.Append('\n');
                        break;
                    case 'r':
                        builder.Append('\r');
                        break;
                    case 't':
                        builder.Append('\t');
                        break;
                    case 'u':
                        int code;
                        if (position + 4 > json.Length || !int.TryParse(json.Substring(position, 4),
                                NumberStyles.HexNumber, CultureInfo.InvariantCulture, out code))
                        {
                            throw Error(json, position, "bad \\u escape");
                        }
                        builder.Append((char)code);
                        position += 4;
                        break;
                    default:
                        throw Error(json, position - 1, "bad escape '\\" + escape + "'");
                }
            }
            throw Error(json, position, "unterminated string");
        }

        static double ReadNumber(string json, ref int position)
        {
            int start = position;
            while (position < json.Length && "+-0123456789.eE".IndexOf(json[position]) >= 0) position++;
            double value;
            if (!double.TryParse(json.Substring(start, position - start), NumberStyles.Float,
                    CultureInfo.InvariantCulture, out value))
            {
                throw Error(json, start, "bad number");
            }
            return value;
        }

        static void SkipWhitespace(string json, ref int position)
        {
            while (position < json.Length && (json[position] == ' ' || json[position] == '\t'
                                              || json[position] == '\n' || json[position] == '\r'))
            {
                position++;
            }
        }

        static bool Matches(string json, int position, string literal)
        {
            return string.CompareOrdinal(json, position, literal, 0, literal.Length) == 0;
        }

        static void Expect(string json, ref int position, char c)
        {
            if (position >= json.Length || json[position] != c) throw Error(json, position, "expected '" + c + "'");
            position++;
        }

        static FormatException Error(string json, int position, string what)
        {
            return new FormatException(what + " at character " + position + " of the JSON text");
        }
    }
}
