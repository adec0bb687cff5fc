using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Threading;
using System.Threading.Tasks;
using UnityEngine.Networking;

namespace NpcServer.Dialogue.Unity
{
    /// <summary>
    /// The transport for Unity games: a UnityWebRequest POST whose DownloadHandlerScript hands each chunk to the
    /// gRPC-Web reader as it arrives, so deltas reach the game while the NPC is still "speaking". Needs no DLL and
    /// no native plugin, so it works on every platform Unity's networking does, WebGL included (where the browser
    /// may deliver the body in larger pieces). Call it on the main thread, as every UnityWebRequest API requires;
    /// <see cref="NpcSpeaker"/> does.
    /// </summary>
    public sealed class UnityWebRequestTransport : INpcTransport
    {
        readonly string _baseUrl;
        readonly int _timeoutSeconds;

        /// <summary>
        /// Creates a transport for a server such as "http://127.0.0.1:8080". <paramref name="timeoutSeconds"/> 0
        /// means no timeout (a long reply may stream for a while).
        /// </summary>
        public UnityWebRequestTransport(string baseUrl, int timeoutSeconds = 0)
        {
            _baseUrl = NpcClient.NormalizeBaseUrl(baseUrl);
            _timeoutSeconds = Math.Max(0, timeoutSeconds);
        }

        /// <summary>The server URL requests go to.</summary>
        public string BaseUrl
        {
            get { return _baseUrl; }
        }

        /// <inheritdoc />
        public Task SendAsync(NpcHttpRequest request, ITransportResponseHandler handler,
            CancellationToken cancellationToken)
        {
            var completion = new TaskCompletionSource<bool>();
            if (cancellationToken.IsCancellationRequested)
            {
                completion.SetCanceled();
                return completion.Task;
            }

            var clock = Stopwatch.StartNew();
            var web = new UnityWebRequest(_baseUrl + request.Path, "POST");
            StreamingDownloadHandler download;
            UnityWebRequestAsyncOperation operation;
            try
            {
                var upload = new UploadHandlerRaw(request.Body);
                download = new StreamingDownloadHandler(web, handler);
                web.uploadHandler = upload;
                web.downloadHandler = download;
                web.disposeUploadHandlerOnDispose = true;
                web.disposeDownloadHandlerOnDispose = true;
                web.timeout = _timeoutSeconds;
                foreach (var header in request.Headers)
                {
                    if (string.Equals(header.Key, "content-type", StringComparison.OrdinalIgnoreCase))
                    {
                        upload.contentType = header.Value;
                    }
                    web.SetRequestHeader(header.Key, header.Value);
                }
                operation = web.SendWebRequest();
            }
            catch (Exception e)
            {
                // The request never started, so no completion callback will dispose it (and its native memory).
                web.Dispose();
                completion.SetException(RefusedError(e));
                return completion.Task;
            }

            var registration = default(CancellationTokenRegistration);
            bool finished = false;
            if (cancellationToken.CanBeCanceled)
            {
                // Abort must run on the main thread: let the token post back to Unity's synchronization context.
                registration = cancellationToken.Register(() =>
                {
                    if (!finished) web.Abort();
                }, true);
            }
            operation.completed += _ =>
            {
                finished = true;
                registration.Dispose();
                try
                {
                    if (download.HandlerError != null)
                    {
                        completion.TrySetException(download.HandlerError);
                    }
                    else if (cancellationToken.IsCancellationRequested)
                    {
                        completion.TrySetCanceled();
                    }
                    else if (web.result == UnityWebRequest.Result.ConnectionError && IsTimeout(web.error, clock))
                    {
                        completion.TrySetException(new NpcRpcException(GrpcStatusCode.DeadlineExceeded,
                            "no complete reply from " + _baseUrl + " within the transport timeout of "
                            + _timeoutSeconds + " s; raise timeoutSeconds in the NpcConnectionSettings, or set it "
                            + "to 0 so that long replies can stream to the end"));
                    }
                    else if (web.result == UnityWebRequest.Result.ConnectionError)
                    {
                        completion.TrySetException(
                            new NpcUnavailableException("cannot reach " + _baseUrl + ": " + web.error));
                    }
                    else
                    {
                        // A trailers-only reply has no body, so the handler may not have seen the headers yet.
                        download.EnsureStarted();
                        completion.TrySetResult(true);
                    }
                }
                catch (Exception e)
                {
                    completion.TrySetException(e);
                }
                finally
                {
                    web.Dispose();
                }
            };
            return completion.Task;
        }

        // Unity reports its own timeout as a ConnectionError whose error is "Request timeout"; the clock also
        // catches a platform that words it differently.
        bool IsTimeout(string error, Stopwatch clock)
        {
            if (_timeoutSeconds <= 0) return false;
            return string.Equals(error, "Request timeout", StringComparison.OrdinalIgnoreCase)
                   || clock.Elapsed.TotalSeconds >= _timeoutSeconds;
        }

        Exception RefusedError(Exception e)
        {
            // Unity 2022.1+ refuses http:// in SendWebRequest unless the player settings allow it (and iOS does so
            // on every version); say where to change that.
            if (e is InvalidOperationException && _baseUrl.StartsWith("http://", StringComparison.OrdinalIgnoreCase))
            {
                return new InvalidOperationException("Unity refused the request to " + _baseUrl + ": " + e.Message
                    + ". Plain http:// needs Player Settings > Other Settings > Allow downloads over HTTP; "
                    + "shipped games should use https://", e);
            }
            return e;
        }

        sealed class StreamingDownloadHandler : DownloadHandlerScript
        {
            readonly UnityWebRequest _web;
            readonly ITransportResponseHandler _handler;
            bool _started;

            public StreamingDownloadHandler(UnityWebRequest web, ITransportResponseHandler handler)
                : base(new byte[16 * 1024])
            {
                _web = web;
                _handler = handler;
            }

            public Exception HandlerError { get; private set; }

            public void EnsureStarted()
            {
                if (_started) return;
                _started = true;
                var headers = new Dictionary<string, string>(StringComparer.Ordinal);
                var raw = _web.GetResponseHeaders();
                if (raw != null)
                {
                    foreach (var pair in raw) headers[pair.Key.ToLowerInvariant()] = pair.Value;
                }
                _handler.OnResponseStarted((int)_web.responseCode, headers);
            }

            protected override bool ReceiveData(byte[] data, int dataLength)
            {
                if (HandlerError != null) return false;
                try
                {
                    EnsureStarted();
                    if (data != null && dataLength > 0) _handler.OnData(data, 0, dataLength);
                    return true;
                }
                catch (Exception e)
                {
                    // Returning false makes Unity abort the request; the completion callback reports this error.
                    HandlerError = e;
                    return false;
                }
            }
        }
    }
}
