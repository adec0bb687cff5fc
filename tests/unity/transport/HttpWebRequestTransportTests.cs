using System;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Threading;
using NpcServer.Api.V1;
using NpcServer.Dialogue.GrpcWeb;
using NpcServer.Dialogue.Protobuf;
using NpcServer.Dialogue.Tests;
using NUnit.Framework;

namespace NpcServer.Dialogue.TransportTests
{
    // HttpWebRequestTransport against a loopback socket that sends one delta and then goes quiet, like a server
    // stalled mid-reply: mono raises a WebException with status Timeout, which must not read as "cannot reach".
    [TestFixture]
    public class HttpWebRequestTransportTests
    {
        [Test]
        public void AReadTimeoutMidStreamIsDeadlineExceededNotUnreachable()
        {
            var listener = new TcpListener(IPAddress.Loopback, 0);
            listener.Start();
            var release = new ManualResetEventSlim();
            var server = new Thread(() =>
            {
                using (var socket = listener.AcceptTcpClient())
                {
                    var stream = socket.GetStream();
                    stream.Read(new byte[65536], 0, 65536);
                    var frame = GrpcWebFraming.EncodeMessage(ProtoWriter.Serialize(
                        new TalkResponse { Delta = new ContentDelta { Content = "Once" } }));
                    var head = Encoding.ASCII.GetBytes("HTTP/1.1 200 OK\r\nContent-Type: application/grpc-web+proto\r\n"
                                                       + "Transfer-Encoding: chunked\r\n\r\n"
                                                       + frame.Length.ToString("x") + "\r\n");
                    stream.Write(head, 0, head.Length);
                    stream.Write(frame, 0, frame.Length);
                    stream.Write(Encoding.ASCII.GetBytes("\r\n"), 0, 2);
                    stream.Flush();
                    release.Wait(TimeSpan.FromSeconds(30));
                }
            }) { IsBackground = true };
            server.Start();
            try
            {
                string url = "http://127.0.0.1:" + ((IPEndPoint)listener.LocalEndpoint).Port;
                var transport = new HttpWebRequestTransport(url) { ReadWriteTimeoutMilliseconds = 300 };
                var deltas = new Recorder<string>();
                var request = new TalkRequest { PersonaId = "narrator", ConversationId = "c", Text = "A long tale." };
                var error = Sync.Catch(() => new NpcClient(transport).TalkAsync(request, deltas));
                Assert.AreEqual(new[] { "Once" }, deltas.Items.ToArray());
                Assert.IsInstanceOf<NpcRpcException>(error);
                Assert.IsNotInstanceOf<NpcUnavailableException>(error, error.Message);
                Assert.AreEqual(GrpcStatusCode.DeadlineExceeded, ((NpcRpcException)error).StatusCode);
                StringAssert.Contains("ReadWriteTimeoutMilliseconds", error.Message);
            }
            finally
            {
                release.Set();
                server.Join(TimeSpan.FromSeconds(5));
                listener.Stop();
            }
        }
    }
}
