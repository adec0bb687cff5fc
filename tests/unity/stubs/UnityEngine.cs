// A minimal stand-in for the UnityEngine API the package uses, so Debian's mcs can compile Runtime/, Editor/ and
// the sample outside Unity. Signatures follow Unity 2021.3; bodies do just enough for the editor-mode tests that
// drive NpcSpeaker with a fake transport. It lives outside unity_package/ so Unity never imports it.
using System;
using System.Collections.Generic;

namespace UnityEngine
{
    public class Object
    {
        public string name { get; set; }
        public static void Destroy(Object obj) { }
        public static void DestroyImmediate(Object obj) { }
        public static implicit operator bool(Object obj) { return !ReferenceEquals(obj, null); }
    }

    public class Component : Object
    {
        public GameObject gameObject { get; internal set; }
        public Transform transform { get { return gameObject == null ? null : gameObject.transform; } }
        public T GetComponent<T>() where T : class { return gameObject == null ? null : gameObject.GetComponent<T>(); }
    }

    public class Transform : Component
    {
        public void SetParent(Transform parent, bool worldPositionStays) { }
    }

    public class Behaviour : Component
    {
        public bool enabled { get; set; } = true;
        public bool isActiveAndEnabled { get { return enabled; } }
    }

    public class MonoBehaviour : Behaviour
    {
    }

    public class ScriptableObject : Object
    {
        public static T CreateInstance<T>() where T : ScriptableObject, new() { return new T(); }
    }

    public sealed class GameObject : Object
    {
        readonly List<Component> _components = new List<Component>();

        public GameObject() : this("GameObject") { }

        public GameObject(string name)
        {
            this.name = name;
            transform = new Transform { gameObject = this };
        }

        public Transform transform { get; private set; }

        public T AddComponent<T>() where T : Component, new()
        {
            var component = new T { gameObject = this };
            _components.Add(component);
            return component;
        }

        public T GetComponent<T>() where T : class
        {
            foreach (var c in _components)
            {
                var match = c as T;
                if (match != null) return match;
            }
            return null;
        }
    }

    [AttributeUsage(AttributeTargets.Field)]
    public sealed class SerializeField : Attribute { }

    [AttributeUsage(AttributeTargets.Field)]
    public sealed class TooltipAttribute : Attribute { public TooltipAttribute(string tooltip) { } }

    [AttributeUsage(AttributeTargets.Field, AllowMultiple = true)]
    public sealed class HeaderAttribute : Attribute { public HeaderAttribute(string header) { } }

    [AttributeUsage(AttributeTargets.Field)]
    public sealed class TextAreaAttribute : Attribute
    {
        public TextAreaAttribute() { }
        public TextAreaAttribute(int minLines, int maxLines) { }
    }

    [AttributeUsage(AttributeTargets.Field)]
    public sealed class MinAttribute : Attribute { public MinAttribute(float min) { } }

    [AttributeUsage(AttributeTargets.Field)]
    public sealed class RangeAttribute : Attribute { public RangeAttribute(float min, float max) { } }

    [AttributeUsage(AttributeTargets.Class)]
    public sealed class CreateAssetMenuAttribute : Attribute
    {
        public string fileName { get; set; }
        public string menuName { get; set; }
        public int order { get; set; }
    }

    [AttributeUsage(AttributeTargets.Class)]
    public sealed class AddComponentMenu : Attribute { public AddComponentMenu(string menuName) { } }

    [AttributeUsage(AttributeTargets.Class)]
    public sealed class DisallowMultipleComponent : Attribute { }

    [AttributeUsage(AttributeTargets.Class)]
    public sealed class HelpURLAttribute : Attribute { public HelpURLAttribute(string url) { } }

    public static class Debug
    {
        public static void Log(object message) { Console.WriteLine(message); }
        public static void LogWarning(object message) { Console.WriteLine("warning: " + message); }
        public static void LogError(object message) { Console.Error.WriteLine(message); }
        public static void LogException(Exception exception) { Console.Error.WriteLine(exception); }
    }

    public static class Time
    {
        public static float deltaTime { get { return 0.02f; } }
        public static float unscaledDeltaTime { get { return 0.02f; } }
    }

    public static class Application
    {
        public static bool isPlaying { get { return false; } }
    }

    public static class JsonUtility
    {
        public static T FromJson<T>(string json)
        {
            // Unity's JsonUtility reads only objects: a top-level array, string or number throws this.
            string trimmed = (json ?? "").TrimStart();
            if (trimmed.Length > 0 && trimmed[0] != '{') throw new ArgumentException("JSON must represent an object type.");
            throw new NotSupportedException("stub: JsonUtility needs Unity");
        }
        public static string ToJson(object obj) { throw new NotSupportedException("stub: JsonUtility needs Unity"); }
    }

    public static class PlayerPrefs
    {
        static readonly Dictionary<string, string> Values = new Dictionary<string, string>();
        public static void SetString(string key, string value) { Values[key] = value; }
        public static string GetString(string key, string defaultValue) { string v; return Values.TryGetValue(key, out v) ? v : defaultValue; }
        public static bool HasKey(string key) { return Values.ContainsKey(key); }
        public static void Save() { }
    }

    public struct Rect
    {
        public Rect(float x, float y, float width, float height) { this.x = x; this.y = y; this.width = width; this.height = height; }
        public float x, y, width, height;
    }

    public static class Mathf
    {
        public static float Min(float a, float b) { return Math.Min(a, b); }
        public static float Max(float a, float b) { return Math.Max(a, b); }
    }

    public static class Screen
    {
        public static int width { get { return 1280; } }
        public static int height { get { return 720; } }
    }

    public sealed class GUILayoutOption { }

    public class GUIStyle
    {
        public bool wordWrap { get; set; }
        public GUIStyle() { }
        public GUIStyle(GUIStyle other) { }
    }

    public class GUISkin
    {
        public GUIStyle label { get; } = new GUIStyle();
        public GUIStyle box { get; } = new GUIStyle();
    }

    public static class GUI
    {
        public static GUISkin skin { get; } = new GUISkin();
        public static bool enabled { get; set; } = true;
    }

    public static class GUILayout
    {
        public static void BeginArea(Rect screenRect) { }
        public static void BeginArea(Rect screenRect, string text, GUIStyle style) { }
        public static void EndArea() { }
        public static void BeginHorizontal(params GUILayoutOption[] options) { }
        public static void EndHorizontal() { }
        public static void BeginVertical(params GUILayoutOption[] options) { }
        public static void BeginVertical(GUIStyle style, params GUILayoutOption[] options) { }
        public static void EndVertical() { }
        public static Vector2 BeginScrollView(Vector2 scrollPosition, params GUILayoutOption[] options) { return scrollPosition; }
        public static void EndScrollView() { }
        public static void Label(string text, params GUILayoutOption[] options) { }
        public static void Label(string text, GUIStyle style, params GUILayoutOption[] options) { }
        public static string TextField(string text, params GUILayoutOption[] options) { return text; }
        public static bool Button(string text, params GUILayoutOption[] options) { return false; }
        public static void FlexibleSpace() { }
        public static void Space(float pixels) { }
        public static GUILayoutOption Width(float width) { return new GUILayoutOption(); }
        public static GUILayoutOption Height(float height) { return new GUILayoutOption(); }
        public static GUILayoutOption ExpandHeight(bool expand) { return new GUILayoutOption(); }
        public static GUILayoutOption ExpandWidth(bool expand) { return new GUILayoutOption(); }
    }

    public struct Vector2
    {
        public Vector2(float x, float y) { this.x = x; this.y = y; }
        public float x, y;
        public static Vector2 zero { get { return new Vector2(0, 0); } }
    }

    public class AsyncOperation
    {
        public bool isDone { get; internal set; }
        public event Action<AsyncOperation> completed;
        internal void Complete() { isDone = true; var c = completed; if (c != null) c(this); }
    }
}

namespace UnityEngine.Events
{
    public abstract class UnityEventBase
    {
        public void RemoveAllListeners() { ClearListeners(); }
        protected abstract void ClearListeners();
    }

    [Serializable]
    public class UnityEvent : UnityEventBase
    {
        readonly List<UnityAction> _listeners = new List<UnityAction>();
        public void AddListener(UnityAction call) { _listeners.Add(call); }
        public void RemoveListener(UnityAction call) { _listeners.Remove(call); }
        public void Invoke() { foreach (var l in _listeners.ToArray()) l(); }
        protected override void ClearListeners() { _listeners.Clear(); }
    }

    [Serializable]
    public class UnityEvent<T0> : UnityEventBase
    {
        readonly List<UnityAction<T0>> _listeners = new List<UnityAction<T0>>();
        public void AddListener(UnityAction<T0> call) { _listeners.Add(call); }
        public void RemoveListener(UnityAction<T0> call) { _listeners.Remove(call); }
        public void Invoke(T0 arg0) { foreach (var l in _listeners.ToArray()) l(arg0); }
        protected override void ClearListeners() { _listeners.Clear(); }
    }

    [Serializable]
    public class UnityEvent<T0, T1> : UnityEventBase
    {
        readonly List<UnityAction<T0, T1>> _listeners = new List<UnityAction<T0, T1>>();
        public void AddListener(UnityAction<T0, T1> call) { _listeners.Add(call); }
        public void RemoveListener(UnityAction<T0, T1> call) { _listeners.Remove(call); }
        public void Invoke(T0 arg0, T1 arg1) { foreach (var l in _listeners.ToArray()) l(arg0, arg1); }
        protected override void ClearListeners() { _listeners.Clear(); }
    }

    public delegate void UnityAction();
    public delegate void UnityAction<T0>(T0 arg0);
    public delegate void UnityAction<T0, T1>(T0 arg0, T1 arg1);
}

namespace UnityEngine.Networking
{
    public class UploadHandler : IDisposable
    {
        public string contentType { get; set; }
        public void Dispose() { }
    }

    public sealed class UploadHandlerRaw : UploadHandler
    {
        public UploadHandlerRaw(byte[] data) { }
    }

    public class DownloadHandler : IDisposable
    {
        protected virtual bool ReceiveData(byte[] data, int dataLength) { return true; }
        protected virtual void CompleteContent() { }
        protected virtual void ReceiveContentLengthHeader(ulong contentLength) { }
        internal bool Deliver(byte[] data) { return ReceiveData(data, data.Length); }
        public void Dispose() { }
    }

    public class DownloadHandlerScript : DownloadHandler
    {
        public DownloadHandlerScript() { }
        public DownloadHandlerScript(byte[] preallocatedBuffer) { }
    }

    public sealed class UnityWebRequestAsyncOperation : AsyncOperation
    {
        public UnityWebRequest webRequest { get; internal set; }
    }

    public class UnityWebRequest : IDisposable
    {
        public enum Result { InProgress, Success, ConnectionError, ProtocolError, DataProcessingError }

        // Stub-only hooks (Unity has none of these): tests script what SendWebRequest does and then play the
        // network's part with StubReceive and StubFinish. Without StubOnSend, SendWebRequest throws as before.
        public static readonly List<UnityWebRequest> StubCreated = new List<UnityWebRequest>();
        public static Action<UnityWebRequest> StubOnSend;
        public bool StubDisposed { get; private set; }
        public bool StubAborted { get; private set; }
        public readonly Dictionary<string, string> StubHeaders = new Dictionary<string, string>();
        UnityWebRequestAsyncOperation _operation;

        public UnityWebRequest(string url, string method)
        {
            this.url = url;
            this.method = method;
            StubCreated.Add(this);
        }

        public string url { get; set; }
        public string method { get; set; }
        public UploadHandler uploadHandler { get; set; }
        public DownloadHandler downloadHandler { get; set; }
        public bool disposeUploadHandlerOnDispose { get; set; }
        public bool disposeDownloadHandlerOnDispose { get; set; }
        public int timeout { get; set; }
        public long responseCode { get; private set; }
        public Result result { get; private set; }
        public string error { get; private set; }
        public bool isDone { get; private set; }

        public void SetRequestHeader(string name, string value)
        {
            // Like Unity, refuse empty names or values and control characters (CR/LF would split the header).
            if (string.IsNullOrEmpty(name)) throw new ArgumentException("Cannot set a request header with no name");
            if (string.IsNullOrEmpty(value)) throw new ArgumentException("Cannot set request header " + name + " empty");
            foreach (char c in name + value)
            {
                if (c < 0x20 && c != '\t') throw new ArgumentException("Request header " + name + ": invalid characters");
            }
            StubHeaders[name] = value;
        }

        public Dictionary<string, string> GetResponseHeaders() { return new Dictionary<string, string>(); }
        public string GetResponseHeader(string name) { return null; }

        public UnityWebRequestAsyncOperation SendWebRequest()
        {
            if (StubOnSend == null) throw new NotSupportedException("stub: UnityWebRequest needs the Unity engine");
            StubOnSend(this);
            _operation = new UnityWebRequestAsyncOperation { webRequest = this };
            return _operation;
        }

        /// <summary>Stub only: the server sent a status line and a chunk of the body.</summary>
        public bool StubReceive(long status, byte[] chunk)
        {
            responseCode = status;
            return downloadHandler.Deliver(chunk);
        }

        /// <summary>Stub only: the request ended (Unity then raises the operation's completed event).</summary>
        public void StubFinish(Result outcome, string errorText)
        {
            result = outcome;
            error = errorText;
            isDone = true;
            _operation.Complete();
        }

        public void Abort() { StubAborted = true; }

        public void Dispose()
        {
            StubDisposed = true;
            if (disposeUploadHandlerOnDispose && uploadHandler != null) uploadHandler.Dispose();
            if (disposeDownloadHandlerOnDispose && downloadHandler != null) downloadHandler.Dispose();
        }
    }
}

namespace UnityEngine.UI
{
    public class Text : MonoBehaviour
    {
        public virtual string text { get; set; } = "";
    }
}
