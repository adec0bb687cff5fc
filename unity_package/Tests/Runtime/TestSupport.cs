using System;
using System.Collections.Generic;
using System.Threading;
using System.Threading.Tasks;
using NpcServer.Dialogue.GrpcWeb;
using NpcServer.Dialogue.Protobuf;

namespace NpcServer.Dialogue.Tests
{
    /// <summary>
    /// A transport that replays a scripted response, so client logic is tested without a network. With
    /// <see cref="HoldOpenAfterChunks"/> it delivers its chunks and then waits for cancellation, like a server
    /// still generating.
    /// </summary>
    public sealed class ScriptedTransport : INpcTransport
    {
        // One script per call; the last one answers every later call.
        readonly List<List<byte[]>> _scripts = new List<List<byte[]>> { new List<byte[]>() };

        public ScriptedTransport(int httpStatus = 200, IDictionary<string, string> headers = null)
        {
            HttpStatus = httpStatus;
            Headers = headers ?? new Dictionary<string, string> { { "content-type", "application/grpc-web+proto" } };
        }

        public int HttpStatus { get; set; }
        public IDictionary<string, string> Headers { get; set; }
        public bool HoldOpenAfterChunks { get; set; }
        public NpcHttpRequest LastRequest { get; private set; }
        public int Calls { get; private set; }
        public readonly List<NpcHttpRequest> Requests = new List<NpcHttpRequest>();

        List<byte[]> _chunks
        {
            get { return _scripts[_scripts.Count - 1]; }
        }

        /// <summary>What follows answers the next call (a follow-up Talk).</summary>
        public ScriptedTransport NextCall()
        {
            _scripts.Add(new List<byte[]>());
            return this;
        }

        public ScriptedTransport Message(IProtoMessage message)
        {
            _chunks.Add(GrpcWebFraming.EncodeMessage(ProtoWriter.Serialize(message)));
            return this;
        }

        public ScriptedTransport Trailer(int status, string message = null)
        {
            string text = "grpc-status: " + status + "\r\n" + (message == null ? "" : "grpc-message: " + message + "\r\n");
            _chunks.Add(GrpcWebFraming.Encode(GrpcWebFraming.TrailerFlag, System.Text.Encoding.ASCII.GetBytes(text)));
            return this;
        }

        public ScriptedTransport Raw(byte[] chunk)
        {
            _chunks.Add(chunk);
            return this;
        }

        public Task SendAsync(NpcHttpRequest request, ITransportResponseHandler handler,
            CancellationToken cancellationToken)
        {
            LastRequest = request;
            Requests.Add(request);
            var script = _scripts[Math.Min(Calls, _scripts.Count - 1)];
            Calls++;
            var done = new TaskCompletionSource<bool>();
            try
            {
                cancellationToken.ThrowIfCancellationRequested();
                handler.OnResponseStarted(HttpStatus, Headers);
                // Deliver byte by byte: the decoder must cope with frames split anywhere.
                foreach (var chunk in script)
                {
                    for (int i = 0; i < chunk.Length; i++) handler.OnData(chunk, i, 1);
                }
            }
            catch (Exception e)
            {
                done.SetException(e);
                return done.Task;
            }
            if (HoldOpenAfterChunks)
            {
                cancellationToken.Register(() => done.TrySetCanceled());
                return done.Task;
            }
            done.SetResult(true);
            return done.Task;
        }
    }

    /// <summary>Sync helpers: NUnit 2.6 (Debian) and Unity's NUnit 3 share no async assertion API.</summary>
    public static class Sync
    {
        public static T Run<T>(Task<T> task)
        {
            return task.GetAwaiter().GetResult();
        }

        public static Exception Catch(Func<Task> action)
        {
            try
            {
                action().GetAwaiter().GetResult();
            }
            catch (Exception e)
            {
                return e;
            }
            return null;
        }
    }

    /// <summary>An IProgress that records reports synchronously, in order.</summary>
    public sealed class Recorder<T> : IProgress<T>
    {
        public readonly List<T> Items = new List<T>();

        public void Report(T value)
        {
            lock (Items) Items.Add(value);
        }
    }
}
