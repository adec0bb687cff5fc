using System;
using System.Linq;
using NpcServer.Api.V1;
using NpcServer.Dialogue.GrpcWeb;
using NpcServer.Dialogue.Protobuf;
using NpcServer.Dialogue.Tests;
using NpcServer.Dialogue.Unity;
using NUnit.Framework;
using UnityEngine.Networking;

namespace NpcServer.Dialogue.TransportTests
{
    // UnityWebRequestTransport's own logic, against the scriptable UnityWebRequest of tests/unity/stubs: the test
    // plays the network's part (StubReceive, StubFinish). These use stub-only hooks, so they live outside the
    // package and do not run in Unity's Test Runner.
    [TestFixture]
    public class UnityWebRequestTransportTests
    {
        const string Url = "http://127.0.0.1:8080";
        int _sends;

        [SetUp]
        public void ScriptTheStub()
        {
            _sends = 0;
            UnityWebRequest.StubCreated.Clear();
            UnityWebRequest.StubOnSend = web => _sends++;
        }

        [TearDown]
        public void ResetTheStub()
        {
            UnityWebRequest.StubOnSend = null;
            UnityWebRequest.StubCreated.Clear();
        }

        static byte[] Frame(TalkResponse message)
        {
            return GrpcWebFraming.EncodeMessage(ProtoWriter.Serialize(message));
        }

        static byte[] OkTrailer()
        {
            return GrpcWebFraming.Encode(GrpcWebFraming.TrailerFlag,
                System.Text.Encoding.ASCII.GetBytes("grpc-status: 0\r\n"));
        }

        static TalkRequest Line(string text)
        {
            return new TalkRequest { PersonaId = "tavern_keeper", ConversationId = "player", Text = text };
        }

        static UnityWebRequest OnlyRequest()
        {
            Assert.AreEqual(1, UnityWebRequest.StubCreated.Count, "one call should create one UnityWebRequest");
            return UnityWebRequest.StubCreated[0];
        }

        [Test]
        public void ChunksReachTheClientAsTheyArriveAndTheRequestIsDisposed()
        {
            var client = new NpcClient(new UnityWebRequestTransport(Url), "key-1");
            var deltas = new Recorder<string>();
            var talk = client.TalkAsync(Line("Ale?"), deltas);
            var web = OnlyRequest();
            Assert.AreEqual(Url + "/npcserver.api.v1.ConversationService/Talk", web.url);
            Assert.AreEqual("Bearer key-1", web.StubHeaders["authorization"]);
            Assert.AreEqual(0, web.timeout, "0 means no timeout, so a long reply can stream");

            web.StubReceive(200, Frame(new TalkResponse { Delta = new ContentDelta { Content = "Aye" } }));
            Assert.AreEqual(new[] { "Aye" }, deltas.Items.ToArray(), "a delta must arrive before the reply ends");
            Assert.IsFalse(talk.IsCompleted);
            var final = new CompletionFinal { Message = new ChatMessage { Role = "assistant", Content = "Aye" } };
            web.StubReceive(200, Frame(new TalkResponse { Final = final }).Concat(OkTrailer()).ToArray());
            web.StubFinish(UnityWebRequest.Result.Success, null);

            Assert.AreEqual("Aye", Sync.Run(talk).Text);
            Assert.IsTrue(web.StubDisposed);
        }

        [Test]
        public void ATimeoutThatCutsTheStreamIsDeadlineExceededNotUnreachable()
        {
            var client = new NpcClient(new UnityWebRequestTransport(Url, 30));
            var deltas = new Recorder<string>();
            var talk = client.TalkAsync(Line("Tell me a long story."), deltas);
            var web = OnlyRequest();
            Assert.AreEqual(30, web.timeout);
            web.StubReceive(200, Frame(new TalkResponse { Delta = new ContentDelta { Content = "Once" } }));
            // What Unity reports when UnityWebRequest.timeout elapses.
            web.StubFinish(UnityWebRequest.Result.ConnectionError, "Request timeout");

            var error = Sync.Catch(() => talk);
            Assert.IsInstanceOf<NpcRpcException>(error);
            Assert.IsNotInstanceOf<NpcUnavailableException>(error, error.Message);
            Assert.AreEqual(GrpcStatusCode.DeadlineExceeded, ((NpcRpcException)error).StatusCode);
            StringAssert.Contains("timeout of 30 s", error.Message);
            StringAssert.Contains("timeoutSeconds", error.Message);
            StringAssert.DoesNotContain("cannot reach", error.Message);
            Assert.IsTrue(web.StubDisposed);
        }

        [Test]
        public void AConnectionErrorWithoutATimeoutIsUnavailable()
        {
            var client = new NpcClient(new UnityWebRequestTransport(Url));
            var talk = client.TalkAsync(Line("Hello?"), null);
            var web = OnlyRequest();
            web.StubFinish(UnityWebRequest.Result.ConnectionError, "Cannot connect to destination host");

            var error = Sync.Catch(() => talk);
            Assert.IsInstanceOf<NpcUnavailableException>(error);
            StringAssert.Contains("cannot reach " + Url + ": Cannot connect to destination host", error.Message);
            Assert.IsTrue(web.StubDisposed);
        }

        [Test]
        public void ARequestRefusedBySetRequestHeaderIsDisposedAndNeverSent()
        {
            // A key with a line break is one UnityWebRequest.SetRequestHeader refuses.
            var client = new NpcClient(new UnityWebRequestTransport(Url), "first-line\nsecond-line");
            var error = Sync.Catch(() => client.TalkAsync(Line("Hi"), null));
            Assert.IsInstanceOf<ArgumentException>(error);
            StringAssert.Contains("authorization", error.Message);
            Assert.IsTrue(OnlyRequest().StubDisposed, "a request that never started must still be disposed");
            Assert.AreEqual(0, _sends);
        }

        [Test]
        public void ARequestRefusedBySendWebRequestIsDisposedAndNamesThePlayerSetting()
        {
            // Unity 2022.1+ throws this from SendWebRequest for http:// unless the player settings allow it.
            UnityWebRequest.StubOnSend = web =>
            {
                throw new InvalidOperationException("Insecure connection not allowed");
            };
            var client = new NpcClient(new UnityWebRequestTransport(Url));
            var error = Sync.Catch(() => client.TalkAsync(Line("Hi"), null));
            Assert.IsInstanceOf<InvalidOperationException>(error);
            StringAssert.Contains("Insecure connection not allowed", error.Message);
            StringAssert.Contains("Allow downloads over HTTP", error.Message);
            Assert.IsTrue(OnlyRequest().StubDisposed, "a request that never started must still be disposed");
        }
    }
}
