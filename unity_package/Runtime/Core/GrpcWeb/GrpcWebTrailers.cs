using System;
using System.Collections.Generic;
using System.Globalization;
using System.Text;

namespace NpcServer.Dialogue.GrpcWeb
{
    /// <summary>Parses the trailer frame's header block and the grpc-status/grpc-message pair.</summary>
    public static class GrpcWebTrailers
    {
        /// <summary>
        /// Parses "name: value\r\n" lines into a dictionary with lower-case names. Later duplicates are joined with
        /// ", " as HTTP does.
        /// </summary>
        public static Dictionary<string, string> Parse(byte[] payload)
        {
            var result = new Dictionary<string, string>(StringComparer.Ordinal);
            if (payload == null) return result;
            // Header values are ASCII by spec. Each byte maps to one char (Latin-1) so a stray byte cannot fail, and
            // no code-page table is needed (IL2CPP builds may strip them).
            var chars = new char[payload.Length];
            for (int i = 0; i < payload.Length; i++) chars[i] = (char)payload[i];
            string text = new string(chars);
            foreach (var rawLine in text.Split('\n'))
            {
                string line = rawLine.TrimEnd('\r');
                if (line.Length == 0) continue;
                int colon = line.IndexOf(':');
                if (colon <= 0) throw new GrpcWebProtocolException("malformed trailer line: " + line);
                string name = line.Substring(0, colon).Trim().ToLowerInvariant();
                string value = line.Substring(colon + 1).Trim();
                string existing;
                result[name] = result.TryGetValue(name, out existing) ? existing + ", " + value : value;
            }
            return result;
        }

        /// <summary>
        /// Reads grpc-status and grpc-message from trailers (or trailers-only response headers). Returns false when
        /// grpc-status is absent.
        /// </summary>
        public static bool TryGetStatus(IDictionary<string, string> trailers, out GrpcStatusCode status,
            out string message)
        {
            status = GrpcStatusCode.Unknown;
            message = "";
            string raw;
            if (trailers == null || !trailers.TryGetValue("grpc-status", out raw)) return false;
            int code;
            if (!int.TryParse(raw.Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out code))
            {
                message = "server sent a non-numeric grpc-status: " + raw;
                return true;
            }
            status = code >= 0 && code <= 16 ? (GrpcStatusCode)code : GrpcStatusCode.Unknown;
            string encoded;
            if (trailers.TryGetValue("grpc-message", out encoded)) message = PercentDecode(encoded);
            return true;
        }

        /// <summary>Decodes grpc-message's percent-encoding (UTF-8 bytes as %XX).</summary>
        public static string PercentDecode(string value)
        {
            if (string.IsNullOrEmpty(value) || value.IndexOf('%') < 0) return value ?? "";
            var bytes = new List<byte>(value.Length);
            for (int i = 0; i < value.Length; i++)
            {
                char c = value[i];
                int hi, lo;
                if (c == '%' && i + 2 < value.Length && (hi = HexValue(value[i + 1])) >= 0
                    && (lo = HexValue(value[i + 2])) >= 0)
                {
                    bytes.Add((byte)((hi << 4) | lo));
                    i += 2;
                }
                else
                {
                    // Unencoded characters are ASCII by spec; anything else is kept as its UTF-8 bytes.
                    bytes.AddRange(Encoding.UTF8.GetBytes(c.ToString()));
                }
            }
            return Encoding.UTF8.GetString(bytes.ToArray());
        }

        /// <summary>The status a gRPC client infers from an HTTP status when no grpc-status came (gRPC's rule).</summary>
        public static GrpcStatusCode FromHttpStatus(int httpStatus)
        {
            switch (httpStatus)
            {
                case 400:
                    return GrpcStatusCode.Internal;
                case 401:
                    return GrpcStatusCode.Unauthenticated;
                case 403:
                    return GrpcStatusCode.PermissionDenied;
                case 404:
                    return GrpcStatusCode.Unimplemented;
                case 429:
                case 502:
                case 503:
                case 504:
                    return GrpcStatusCode.Unavailable;
                default:
                    return GrpcStatusCode.Unknown;
            }
        }

        static int HexValue(char c)
        {
            if (c >= '0' && c <= '9') return c - '0';
            if (c >= 'a' && c <= 'f') return c - 'a' + 10;
            if (c >= 'A' && c <= 'F') return c - 'A' + 10;
            return -1;
        }
    }
}
