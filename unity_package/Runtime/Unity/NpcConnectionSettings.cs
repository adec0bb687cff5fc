using UnityEngine;

namespace NpcServer.Dialogue.Unity
{
    /// <summary>
    /// Where the npcserver runs and how to reach it. Create one with Assets > Create > NPC Dialogue > Connection
    /// Settings and assign it to each <see cref="NpcSpeaker"/>.
    /// </summary>
    [CreateAssetMenu(fileName = "NpcConnectionSettings", menuName = "NPC Dialogue/Connection Settings", order = 0)]
    [HelpURL("https://github.com/npcserver/npcserver/tree/main/unity_package")]
    public sealed class NpcConnectionSettings : ScriptableObject
    {
        [Tooltip("The npcserver HTTP port (gRPC-Web), for example http://127.0.0.1:8080. Not the gRPC port.")]
        [SerializeField]
        string serverUrl = "http://127.0.0.1:8080";

        [Tooltip("Sent as 'authorization: Bearer <key>' when set. It ships inside the build: use a per-game key.")]
        [SerializeField]
        string apiKey = "";

        [Tooltip("Seconds before a request is abandoned. 0 waits as long as the reply streams.")]
        [Min(0)]
        [SerializeField]
        int timeoutSeconds = 0;

        /// <summary>The server's HTTP URL.</summary>
        public string ServerUrl
        {
            get { return serverUrl; }
            set { serverUrl = value; }
        }

        /// <summary>The API key, or empty.</summary>
        public string ApiKey
        {
            get { return apiKey; }
            set { apiKey = value; }
        }

        /// <summary>Request timeout in seconds; 0 for none.</summary>
        public int TimeoutSeconds
        {
            get { return timeoutSeconds; }
            set { timeoutSeconds = value; }
        }

        /// <summary>
        /// Builds a client over <see cref="UnityWebRequestTransport"/>. Throws ArgumentException saying what to fix
        /// when the URL is not a valid http(s) URL.
        /// </summary>
        public NpcClient CreateClient()
        {
            return new NpcClient(new UnityWebRequestTransport(serverUrl, timeoutSeconds), apiKey);
        }
    }
}
