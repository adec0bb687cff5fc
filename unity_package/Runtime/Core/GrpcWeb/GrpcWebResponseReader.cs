using System;
using System.Collections.Generic;
using NpcServer.Dialogue.Protobuf;

namespace NpcServer.Dialogue.GrpcWeb
{
    /// <summary>
    /// Turns a gRPC-Web response into messages and a final status: decodes frames as chunks arrive, hands each
    /// message to a callback at once (so streamed tokens reach the game as they are sampled), and reads the status
    /// from the trailer frame or, for a trailers-only response, from the headers.
    /// </summary>
    public sealed class GrpcWebResponseReader<TResponse> : ITransportResponseHandler
        where TResponse : IProtoMessage, new()
    {
        readonly Action<TResponse> _onMessage;
        readonly GrpcWebDecoder _decoder = new GrpcWebDecoder();
        int _httpStatus;
        bool _started;
        IDictionary<string, string> _headers = new Dictionary<string, string>();
        IDictionary<string, string> _trailers;
        List<byte> _errorBody;
        const int MaxErrorBody = 4096;

        /// <summary>Creates a reader that passes each decoded message to <paramref name="onMessage"/>.</summary>
        public GrpcWebResponseReader(Action<TResponse> onMessage)
        {
            _onMessage = onMessage;
        }

        /// <summary>Messages decoded so far.</summary>
        public int MessageCount { get; private set; }

        /// <inheritdoc />
        public void OnResponseStarted(int httpStatus, IDictionary<string, string> headers)
        {
            _started = true;
            _httpStatus = httpStatus;
            _headers = headers ?? new Dictionary<string, string>();
            GrpcStatusCode status;
            string message;
            // Trailers-only: the status is in the headers and the body is empty. Failing here stops the read at once.
            if (GrpcWebTrailers.TryGetStatus(_headers, out status, out message))
            {
                _trailers = _headers;
                if (status != GrpcStatusCode.Ok) throw NpcRpcException.FromStatus(status, message, _headers);
            }
            else if (httpStatus != 200)
            {
                // Not a gRPC-Web reply (a proxy, a wrong URL, an HTTP-level auth check): keep the start of the body
                // so the error can quote the server's own message, and fail in Complete().
                _errorBody = new List<byte>();
            }
        }

        /// <inheritdoc />
        public void OnData(byte[] buffer, int offset, int count)
        {
            if (!_started) throw new InvalidOperationException("transport sent data before the response started");
            if (_errorBody != null)
            {
                for (int i = 0; i < count && _errorBody.Count < MaxErrorBody; i++) _errorBody.Add(buffer[offset + i]);
                return;
            }
            foreach (var frame in _decoder.Feed(buffer, offset, count))
            {
                if (frame.IsTrailer)
                {
                    _trailers = GrpcWebTrailers.Parse(frame.Payload);
                    GrpcStatusCode status;
                    string message;
                    if (!GrpcWebTrailers.TryGetStatus(_trailers, out status, out message))
                    {
                        throw NpcRpcException.FromStatus(GrpcStatusCode.Internal,
                            "server's trailer frame has no grpc-status", _trailers);
                    }
                    if (status != GrpcStatusCode.Ok) throw NpcRpcException.FromStatus(status, message, _trailers);
                    continue;
                }
                TResponse response;
                try
                {
                    response = ProtoReader.Parse<TResponse>(frame.Payload);
                }
                catch (ProtoDecodeException e)
                {
                    throw NpcRpcException.FromStatus(GrpcStatusCode.Internal,
                        "cannot decode " + typeof(TResponse).Name + ": " + e.Message, null);
                }
                MessageCount++;
                if (_onMessage != null) _onMessage(response);
            }
        }

        /// <summary>
        /// Called when the body has ended: throws unless the stream ended with an OK status. A body that ends with
        /// no trailer means the connection was cut mid-stream.
        /// </summary>
        public void Complete()
        {
            if (!_started)
            {
                throw NpcRpcException.FromStatus(GrpcStatusCode.Internal, "response ended before it started", null);
            }
            if (_errorBody != null) throw HttpError();
            if (_trailers == null)
            {
                string detail = _decoder.PendingBytes > 0
                    ? "stream cut inside a frame (" + _decoder.PendingBytes + " bytes pending)"
                    : "stream ended without a gRPC-Web trailer (HTTP " + _httpStatus + ")";
                throw NpcRpcException.FromStatus(GrpcStatusCode.Unavailable, detail, _headers);
            }
            if (_decoder.PendingBytes > 0)
            {
                throw NpcRpcException.FromStatus(GrpcStatusCode.Internal, "partial frame after the trailer", null);
            }
        }

        NpcRpcException HttpError()
        {
            string detail;
            switch (_httpStatus)
            {
                case 401:
                    detail = "the server wants an API key: set one in the connection settings";
                    break;
                case 404:
                    detail = "no gRPC-Web endpoint here: is the URL the npcserver HTTP port (default 8080)?";
                    break;
                default:
                    detail = "the reply is not gRPC-Web";
                    break;
            }
            string body = ErrorBodyMessage();
            string message = "HTTP " + _httpStatus + ": " + detail + (body.Length > 0 ? " (server said: " + body + ")" : "");
            return NpcRpcException.FromStatus(GrpcWebTrailers.FromHttpStatus(_httpStatus), message, _headers);
        }

        // An OpenAI-style {"error": {"message": ...}} body yields its message; other text is quoted as it is.
        string ErrorBodyMessage()
        {
            if (_errorBody.Count == 0) return "";
            string text = System.Text.Encoding.UTF8.GetString(_errorBody.ToArray()).Trim();
            try
            {
                var root = NpcJson.Parse(text) as IDictionary<string, object>;
                object error;
                if (root != null && root.TryGetValue("error", out error))
                {
                    var details = error as IDictionary<string, object>;
                    object message;
                    if (details != null && details.TryGetValue("message", out message) && message is string)
                    {
                        return (string)message;
                    }
                }
            }
            catch (FormatException)
            {
                // Not JSON: quote the text itself below.
            }
            return text.Length > 200 ? text.Substring(0, 200) + "..." : text;
        }
    }
}
