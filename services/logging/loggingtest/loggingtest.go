// Package loggingtest provides a protobuf message type carrying debug_redact fields, bytes fields,
// nested messages, lists and maps, built at run time with dynamicpb, for tests that must prove
// secrets never reach the logs.
package loggingtest

import (
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
)

// Names of the test service and its one method, as gRPC spells them.
const (
	ServiceName = "attestboot.loggingtest.v1.Secrets"
	PutMethod   = "/attestboot.loggingtest.v1.Secrets/Put"
)

// File returns the descriptor of this proto file:
//
//	package attestboot.loggingtest.v1;
//	enum Kind { KIND_UNSPECIFIED = 0; KIND_PLAIN = 1; KIND_CLASSIFIED = 2 [debug_redact = true]; }
//	message Inner { string note = 1; string pin = 2 [debug_redact = true]; bytes blob = 3; }
//	message PutRequest {
//	  string name = 1;
//	  string value = 2 [debug_redact = true];
//	  bytes key = 3;
//	  Inner inner = 4;
//	  repeated Inner items = 5;
//	  map<string, Inner> by_name = 6;
//	  Kind kind = 7;
//	  repeated bytes blobs = 8;
//	  map<string, string> labels = 9;
//	  map<string, string> hidden = 10 [debug_redact = true];
//	  string admin_token = 11; // no option: only a name-based fallback can catch it
//	}
//	message PutResponse { string name = 1; }
//	service Secrets { rpc Put(PutRequest) returns (PutResponse); }
//
// The names of the debug_redact fields are chosen so that no name-based heuristic catches them:
// only the option can. admin_token is the opposite case.
func File() (protoreflect.FileDescriptor, error) {
	fd, err := protodesc.NewFile(fileProto(), new(protoregistry.Files))
	if err != nil {
		return nil, fmt.Errorf("loggingtest: build descriptor: %w", err)
	}
	return fd, nil
}

// Messages returns the PutRequest and PutResponse descriptors.
func Messages() (req, resp protoreflect.MessageDescriptor, err error) {
	fd, err := File()
	if err != nil {
		return nil, nil, err
	}
	return fd.Messages().ByName("PutRequest"), fd.Messages().ByName("PutResponse"), nil
}

// Values fills a PutRequest. Every field that must never be logged holds a value containing
// marker, so a test can search the log for marker.
type Values struct {
	Name     string
	Marker   string
	Key      []byte
	Note     string
	Labels   map[string]string
	ItemsLen int
}

// NewPutRequest returns a PutRequest with every field set from v.
func NewPutRequest(v Values) (*dynamicpb.Message, error) {
	md, _, err := Messages()
	if err != nil {
		return nil, err
	}
	innerMD := md.Fields().ByName("inner").Message()
	inner := func(note string) *dynamicpb.Message {
		m := dynamicpb.NewMessage(innerMD)
		m.Set(innerMD.Fields().ByName("note"), protoreflect.ValueOfString(note))
		m.Set(innerMD.Fields().ByName("pin"), protoreflect.ValueOfString("pin-"+v.Marker))
		m.Set(innerMD.Fields().ByName("blob"), protoreflect.ValueOfBytes([]byte("blob-"+v.Marker)))
		return m
	}

	m := dynamicpb.NewMessage(md)
	f := md.Fields()
	m.Set(f.ByName("name"), protoreflect.ValueOfString(v.Name))
	m.Set(f.ByName("value"), protoreflect.ValueOfString("value-"+v.Marker))
	m.Set(f.ByName("key"), protoreflect.ValueOfBytes(v.Key))
	m.Set(f.ByName("inner"), protoreflect.ValueOfMessage(inner(v.Note)))
	items := m.Mutable(f.ByName("items")).List()
	for range v.ItemsLen {
		items.Append(protoreflect.ValueOfMessage(inner(v.Note)))
	}
	m.Mutable(f.ByName("by_name")).Map().Set(protoreflect.ValueOfString(v.Name).MapKey(), protoreflect.ValueOfMessage(inner(v.Note)))
	m.Set(f.ByName("kind"), protoreflect.ValueOfEnum(2))
	m.Mutable(f.ByName("blobs")).List().Append(protoreflect.ValueOfBytes([]byte("blobs-" + v.Marker)))
	labels := m.Mutable(f.ByName("labels")).Map()
	for k, val := range v.Labels {
		labels.Set(protoreflect.ValueOfString(k).MapKey(), protoreflect.ValueOfString(val))
	}
	m.Mutable(f.ByName("hidden")).Map().Set(protoreflect.ValueOfString("hidden-key").MapKey(), protoreflect.ValueOfString("hidden-"+v.Marker))
	m.Set(f.ByName("admin_token"), protoreflect.ValueOfString("token-"+v.Marker))
	return m, nil
}

func fileProto() *descriptorpb.FileDescriptorProto {
	redact := &descriptorpb.FieldOptions{DebugRedact: proto.Bool(true)}
	field := func(name string, num int32, typ descriptorpb.FieldDescriptorProto_Type, label descriptorpb.FieldDescriptorProto_Label, typeName string, opts *descriptorpb.FieldOptions) *descriptorpb.FieldDescriptorProto {
		f := &descriptorpb.FieldDescriptorProto{
			Name:    proto.String(name),
			Number:  proto.Int32(num),
			Type:    typ.Enum(),
			Label:   label.Enum(),
			Options: opts,
		}
		if typeName != "" {
			f.TypeName = proto.String(typeName)
		}
		return f
	}
	const (
		opt = descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL
		rep = descriptorpb.FieldDescriptorProto_LABEL_REPEATED
		str = descriptorpb.FieldDescriptorProto_TYPE_STRING
		byt = descriptorpb.FieldDescriptorProto_TYPE_BYTES
		msg = descriptorpb.FieldDescriptorProto_TYPE_MESSAGE
		enm = descriptorpb.FieldDescriptorProto_TYPE_ENUM
	)
	const pkg = ".attestboot.loggingtest.v1."
	mapEntry := func(name, valueTypeName string, valueType descriptorpb.FieldDescriptorProto_Type) *descriptorpb.DescriptorProto {
		return &descriptorpb.DescriptorProto{
			Name: proto.String(name),
			Field: []*descriptorpb.FieldDescriptorProto{
				field("key", 1, str, opt, "", nil),
				field("value", 2, valueType, opt, valueTypeName, nil),
			},
			Options: &descriptorpb.MessageOptions{MapEntry: proto.Bool(true)},
		}
	}
	return &descriptorpb.FileDescriptorProto{
		Name:    proto.String("attestboot/loggingtest/v1/secrets.proto"),
		Package: proto.String("attestboot.loggingtest.v1"),
		Syntax:  proto.String("proto3"),
		EnumType: []*descriptorpb.EnumDescriptorProto{{
			Name: proto.String("Kind"),
			Value: []*descriptorpb.EnumValueDescriptorProto{
				{Name: proto.String("KIND_UNSPECIFIED"), Number: proto.Int32(0)},
				{Name: proto.String("KIND_PLAIN"), Number: proto.Int32(1)},
				{Name: proto.String("KIND_CLASSIFIED"), Number: proto.Int32(2), Options: &descriptorpb.EnumValueOptions{DebugRedact: proto.Bool(true)}},
			},
		}},
		MessageType: []*descriptorpb.DescriptorProto{
			{
				Name: proto.String("Inner"),
				Field: []*descriptorpb.FieldDescriptorProto{
					field("note", 1, str, opt, "", nil),
					field("pin", 2, str, opt, "", redact),
					field("blob", 3, byt, opt, "", nil),
				},
			},
			{
				Name: proto.String("PutRequest"),
				Field: []*descriptorpb.FieldDescriptorProto{
					field("name", 1, str, opt, "", nil),
					field("value", 2, str, opt, "", redact),
					field("key", 3, byt, opt, "", nil),
					field("inner", 4, msg, opt, pkg+"Inner", nil),
					field("items", 5, msg, rep, pkg+"Inner", nil),
					field("by_name", 6, msg, rep, pkg+"PutRequest.ByNameEntry", nil),
					field("kind", 7, enm, opt, pkg+"Kind", nil),
					field("blobs", 8, byt, rep, "", nil),
					field("labels", 9, msg, rep, pkg+"PutRequest.LabelsEntry", nil),
					field("hidden", 10, msg, rep, pkg+"PutRequest.HiddenEntry", redact),
					field("admin_token", 11, str, opt, "", nil),
				},
				NestedType: []*descriptorpb.DescriptorProto{
					mapEntry("ByNameEntry", pkg+"Inner", msg),
					mapEntry("LabelsEntry", "", str),
					mapEntry("HiddenEntry", "", str),
				},
			},
			{
				Name:  proto.String("PutResponse"),
				Field: []*descriptorpb.FieldDescriptorProto{field("name", 1, str, opt, "", nil)},
			},
		},
		Service: []*descriptorpb.ServiceDescriptorProto{{
			Name: proto.String("Secrets"),
			Method: []*descriptorpb.MethodDescriptorProto{{
				Name:       proto.String("Put"),
				InputType:  proto.String(pkg + "PutRequest"),
				OutputType: proto.String(pkg + "PutResponse"),
			}},
		}},
	}
}
