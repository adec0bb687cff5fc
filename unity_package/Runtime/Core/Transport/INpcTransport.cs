using System.Collections.Generic;
using System.Threading;
using System.Threading.Tasks;

namespace NpcServer.Dialogue
{
    /// <summary>One HTTP/1.1 POST that a transport sends: path, headers and the framed gRPC-Web body.</summary>
    public sealed class NpcHttpRequest
    {
        /// <summary>Creates a request.</summary>
        public NpcHttpRequest(string path, byte[] body, IDictionary<string, string> headers)
        {
            Path = path;
            Body = body;
            Headers = headers;
        }

        /// <summary>The RPC path, for example "/npcserver.api.v1.ConversationService/Talk".</summary>
        public string Path { get; private set; }

        /// <summary>The request body (one gRPC-Web frame).</summary>
        public byte[] Body { get; private set; }

        /// <summary>Headers to send, content-type included.</summary>
        public IDictionary<string, string> Headers { get; private set; }
    }

    /// <summary>
    /// Receives a response as it arrives. A transport calls <see cref="OnResponseStarted"/> once, then
    /// <see cref="OnData"/> for each chunk in order, from one thread at a time. Either may throw: the transport
    /// then aborts the request and fails its task with that exception.
    /// </summary>
    public interface ITransportResponseHandler
    {
        /// <summary>The status line and headers arrived. Header names are lower case.</summary>
        void OnResponseStarted(int httpStatus, IDictionary<string, string> headers);

        /// <summary>A chunk of the body arrived. The buffer may be reused after the call returns.</summary>
        void OnData(byte[] buffer, int offset, int count);
    }

    /// <summary>
    /// Sends one HTTP/1.1 request and streams its response into a handler. Implementations: the Unity
    /// UnityWebRequest transport (every platform, WebGL included) and <see cref="HttpWebRequestTransport"/>
    /// (desktop, editor tools, tests).
    /// </summary>
    public interface INpcTransport
    {
        /// <summary>
        /// Sends the request. The task completes when the whole body has been handed to the handler. It fails with
        /// <see cref="System.OperationCanceledException"/> when <paramref name="cancellationToken"/> fires (the
        /// request is aborted), with <see cref="NpcUnavailableException"/> when the server cannot be reached, or
        /// with whatever the handler threw.
        /// </summary>
        Task SendAsync(NpcHttpRequest request, ITransportResponseHandler handler,
            CancellationToken cancellationToken);
    }
}
