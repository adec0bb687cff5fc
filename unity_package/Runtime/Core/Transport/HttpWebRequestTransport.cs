using System;
using System.Collections.Generic;
using System.IO;
using System.Net;
using System.Threading;
using System.Threading.Tasks;

namespace NpcServer.Dialogue
{
    /// <summary>
    /// A transport over <see cref="HttpWebRequest"/> with read buffering off, so chunks reach the handler as the
    /// server sends them. For desktop builds, editor tools and the package's own end-to-end tests. Not for WebGL
    /// (System.Net sockets do not exist in the browser); Unity games use the UnityWebRequest transport.
    /// </summary>
    public sealed class HttpWebRequestTransport : INpcTransport
    {
        readonly string _baseUrl;

        /// <summary>Creates a transport for a server such as "http://127.0.0.1:8080".</summary>
        public HttpWebRequestTransport(string baseUrl)
        {
            _baseUrl = NpcClient.NormalizeBaseUrl(baseUrl);
        }

        /// <summary>
        /// How long a read may wait for the next chunk before the call fails with DEADLINE_EXCEEDED (default 5
        /// minutes).
        /// </summary>
        public int ReadWriteTimeoutMilliseconds { get; set; } = 300000;

        /// <inheritdoc />
        public async Task SendAsync(NpcHttpRequest request, ITransportResponseHandler handler,
            CancellationToken cancellationToken)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var http = (HttpWebRequest)WebRequest.Create(_baseUrl + request.Path);
            http.Method = "POST";
            // Without this, mono and .NET buffer the whole body, and the player would see the line only at the end.
            http.AllowReadStreamBuffering = false;
            http.ReadWriteTimeout = ReadWriteTimeoutMilliseconds;
            http.ContentLength = request.Body.Length;
            foreach (var header in request.Headers)
            {
                if (string.Equals(header.Key, "content-type", StringComparison.OrdinalIgnoreCase))
                {
                    http.ContentType = header.Value;
                }
                else if (string.Equals(header.Key, "accept", StringComparison.OrdinalIgnoreCase))
                {
                    http.Accept = header.Value;
                }
                else
                {
                    http.Headers[header.Key] = header.Value;
                }
            }

            // Abort is the only way to interrupt a blocked read; the read then throws and is mapped below.
            using (cancellationToken.Register(http.Abort))
            {
                try
                {
                    using (var body = await http.GetRequestStreamAsync().ConfigureAwait(false))
                    {
                        await body.WriteAsync(request.Body, 0, request.Body.Length, cancellationToken)
                            .ConfigureAwait(false);
                    }
                    HttpWebResponse response;
                    try
                    {
                        response = (HttpWebResponse)await http.GetResponseAsync().ConfigureAwait(false);
                    }
                    catch (WebException e) when (e.Response is HttpWebResponse && !cancellationToken.IsCancellationRequested)
                    {
                        // A non-2xx status still carries grpc-status headers (trailers-only); let the handler judge.
                        response = (HttpWebResponse)e.Response;
                    }
                    using (response)
                    {
                        handler.OnResponseStarted((int)response.StatusCode, LowerCaseHeaders(response.Headers));
                        using (var stream = response.GetResponseStream())
                        {
                            var buffer = new byte[8192];
                            int read;
                            while ((read = await stream.ReadAsync(buffer, 0, buffer.Length, cancellationToken)
                                       .ConfigureAwait(false)) > 0)
                            {
                                handler.OnData(buffer, 0, read);
                            }
                        }
                    }
                }
                catch (Exception e) when (cancellationToken.IsCancellationRequested && !(e is NpcRpcException))
                {
                    throw new OperationCanceledException("the call was cancelled", e, cancellationToken);
                }
                catch (WebException e) when (e.Status == WebExceptionStatus.Timeout)
                {
                    // The server was reached but went quiet for too long: a deadline, not an unreachable server.
                    throw new NpcRpcException(GrpcStatusCode.DeadlineExceeded, "no data from " + _baseUrl
                        + " for " + ReadWriteTimeoutMilliseconds + " ms; raise ReadWriteTimeoutMilliseconds for "
                        + "replies that pause longer");
                }
                catch (WebException e)
                {
                    throw new NpcUnavailableException("cannot reach " + _baseUrl + ": " + e.Message);
                }
                catch (IOException e)
                {
                    throw new NpcUnavailableException("connection to " + _baseUrl + " lost: " + e.Message);
                }
            }
        }

        static Dictionary<string, string> LowerCaseHeaders(WebHeaderCollection headers)
        {
            var result = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (string name in headers.AllKeys)
            {
                result[name.ToLowerInvariant()] = headers[name];
            }
            return result;
        }
    }
}
